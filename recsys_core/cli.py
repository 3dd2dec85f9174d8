"""What every command line of the project shares: a usage error is one line and exit 2 (no
usage dump, no traceback); Ctrl-C and a closed pipe (`... | head`) end quietly; progress
lines that never cost a run; an exit that skips the interpreter's teardown once the work is
done, and a clean one from one of several data-parallel processes."""
from __future__ import annotations

import argparse
import os
import sys

INTERRUPTED = 130     # 128 + SIGINT, what shells report for Ctrl-C
BROKEN_PIPE = 141     # 128 + SIGPIPE, what `yes | head` reports for `yes`
# The local executor's --cells-per-gpu, told to the processes it runs on GPUs (train/setup.py)
CELLS_PER_GPU_ENV = "RECSYS_CELLS_PER_GPU"


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


def close_process_group() -> bool:
    """Leave the process group (several processes) before the interpreter exits: a gloo group
    torn down by the exit itself can abort a process ("terminate called without an active
    exception"), which fails the whole `accelerate launch`. True if there was one."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        return True
    return False


def exit_cli(code: int):
    """End a command-line entry point with `code`, its work done, without the interpreter's
    teardown: freeing its thousands of modules one by one took 0.6 s after every cell on the
    2-core VM (grid_throughput --epochs 1, the Beauty cell), time the launcher waits for. What an
    exit owes others still happens, in the interpreter's order: threads that are not daemons
    are waited for (the checkpoint writer's pool too), the atexit handlers run (W&B's
    teardown after its finish, logging, multiprocessing, temporary folders), output is
    flushed, C libraries' too (a CUDA or NCCL line printf'd into a log file); then the
    process ends.
    A process started as one of several (WORLD_SIZE > 1) leaves the process group, if still in
    it, and ends at once, output flushed, without the handlers: there gloo's threads abort a
    process now and then, also with the group destroyed beforehand (seen in 1-2 of 12-20
    two-process CPU runs on the 2-core VM), failing a run whose files are all written."""
    close_process_group()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:     # set by accelerate launch / torchrun
        import atexit
        import threading
        if not (hasattr(threading, "_shutdown") and hasattr(atexit, "_run_exitfuncs")):
            sys.exit(code)          # not CPython's: its own exit, teardown and all
        threading._shutdown()       # what the interpreter's exit does first, then the handlers
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):   # a reader gone (`| head`), a stream closed
            pass
    try:
        import ctypes
        ctypes.CDLL(None).fflush(None)  # every C stdio stream: exit() would, os._exit does not
    except (OSError, AttributeError):
        pass
    os._exit(code)


def print_progress(line: str) -> None:
    """A progress line on stdout, at once (a SLURM log shows it). A reader that went away
    (`... | head`) ends the lines, never the run: the result files matter, the lines do not."""
    try:
        print(line, flush=True)
    except (BrokenPipeError, ValueError, OSError):
        pass
