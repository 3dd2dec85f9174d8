from recsys_core.cli import guarded
from recsys_core.train.loop import exit_cli, main

exit_cli(guarded(main))
