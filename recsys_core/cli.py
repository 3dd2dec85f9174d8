"""What every command line of the project shares: a usage error is one line and exit 2 (no
usage dump, no traceback); Ctrl-C and a closed pipe (`... | head`) end quietly."""
from __future__ import annotations

import argparse
import os
import sys

INTERRUPTED = 130     # 128 + SIGINT, what shells report for Ctrl-C
BROKEN_PIPE = 141     # 128 + SIGPIPE, what `yes | head` reports for `yes`


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def guarded(main, argv=None) -> int:
    """main(argv) with Ctrl-C → one line and exit 130, and a reader that went away (a pipe
    into `head`) → exit 141 without a traceback."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:
        # Python flushes stdout once more at exit: point it at /dev/null so that flush is quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return BROKEN_PIPE
