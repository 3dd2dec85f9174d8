from recsys_core.train.loop import exit_cli, main

exit_cli(main())
