"""The trainer CLI with best_model.pt written slowly (the background writer sleeps before it
writes that file): in a run of several processes, only the main process writes it, and every
process must read it only once the write is done."""
import sys
import time

from recsys_core.train import checkpoint as ckpt

_save = ckpt._save


def slow_save(path, obj):
    if path.name == ckpt.BEST:
        time.sleep(1.5)
    _save(path, obj)


ckpt._save = slow_save

from recsys_core.cli import exit_cli  # noqa: E402
from recsys_core.train.__main__ import main  # noqa: E402

exit_cli(main(sys.argv[1:]))
