import sys

from recsys_core.train.loop import main

sys.exit(main())
