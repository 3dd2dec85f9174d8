"""Ctrl-C of a local sweep: which cells it interrupted (CANCELLED, resume runs them again from
their last checkpoint) and which failed on their own (FAILED).

Ctrl-C in a terminal, `timeout -s INT` or `kill -INT -PGID` reaches the launcher and the
processes running its cells together, and either side may act on it first: a cell's process
can end, and the launcher's thread running it record that end, seconds before the launcher's
main thread handles its own KeyboardInterrupt (or after its threads have all returned). So
the interruption is read from both sides, whatever the order:
- the cell's side: its process reports it (jobs/train_cell and jobs/worker answer Ctrl-C with
  130, the shells' code for it) or died of SIGINT or SIGTERM; the thread that ran the cell
  marks it as soon as it ends (`ended_by_interrupt`, `mark`);
- the launcher's side: `stop` ends the cells still running and marks them, and those that
  ended without a result within `INTERRUPT_SLACK_S` before (a process that crashed on the
  signal instead of answering it).
The mark is `local.interrupted` in the cell's folder. A cell that ended on its own without a
COMPLETED result (an exception in training: exit 1) is never marked and stays FAILED.

Ctrl-C often arrives twice: GNU `timeout -s INT` signals the launcher and then its whole
process group, the launcher included, microseconds apart. While the launcher runs cells
(`interrupt_once`) only the first SIGINT raises KeyboardInterrupt; later ones are ignored, so
that the stop and its marks are not cut short (session 18 lost a sweep's CANCELLED marks and
its summary to a second KeyboardInterrupt raised inside the first one's handling).
SIGTERM (`kill`, `timeout`'s default, a batch system ending the allocation the launcher runs
in) stops the cells the same way: without it the launcher died silently and left its
running cells to go on alone.
"""
from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from pathlib import Path

from launcher.sweep import Sweep
from recsys_core.cli import INTERRUPTED
from recsys_core.train.results import read_result

MARK = "local.interrupted"
# What a cell's process (or worker) ends with when Ctrl-C or a stop ended its cell: its own
# answer, or the signal that killed it (negative, as subprocess reports it).
INTERRUPT_CODES = (INTERRUPTED, -signal.SIGINT, -signal.SIGTERM)
# A cell ended this shortly before the launcher handled Ctrl-C, with another code (a crash on
# the signal), counts as interrupted too.
INTERRUPT_SLACK_S = 2.0


class Interrupted(Exception):
    """Ctrl-C of a local sweep: what had finished, what was stopped, what never started."""

    def __init__(self, codes: dict[str, int], stopped: list[str], not_started: list[str]):
        super().__init__(f"{len(codes)} finished, {len(stopped)} interrupted, "
                         f"{len(not_started)} not started")
        self.codes, self.stopped, self.not_started = codes, stopped, not_started


STOPPING_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def interrupt_once():
    """Within: the first SIGINT or SIGTERM raises KeyboardInterrupt, later ones do nothing
    (only in the main thread, where Python runs signal handlers; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    seen = threading.Event()

    def on_signal(signum, frame):
        if not seen.is_set():
            seen.set()
            raise KeyboardInterrupt

    previous = {s: signal.signal(s, on_signal) for s in STOPPING_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def absorb_late_signals() -> None:
    """From now on SIGINT and SIGTERM are ignored by this process: the launcher has stopped its
    cells and is ending. The second of `timeout`'s two SIGINTs came after `interrupt_once`
    when the cells stopped within its 0.1 s, and killed the launcher in its interpreter's
    teardown (exit -2 instead of 130). SIG_IGN, not a Python handler: the teardown resets
    Python handlers to the default, not an ignored signal."""
    if threading.current_thread() is threading.main_thread():
        for s in STOPPING_SIGNALS:
            signal.signal(s, signal.SIG_IGN)


def completed(cell_dir: Path) -> bool:
    """The cell's process of this run (started when it wrote local.pid) left a COMPLETED result."""
    try:
        result = read_result(cell_dir)
        return bool(result) and result.get("status") == "COMPLETED" and \
            (cell_dir / "result.json").stat().st_mtime >= (cell_dir / "local.pid").stat().st_mtime
    except (OSError, ValueError):
        return False


def ended_by_interrupt(code: int, cell_dir: Path) -> bool:
    """The cell's process said it was interrupted (or died of SIGINT/SIGTERM) before the
    cell completed."""
    return code in INTERRUPT_CODES and not completed(cell_dir)


def mark(cell_dir: Path) -> None:
    (cell_dir / MARK).write_text(f"{time.time()}\n")


def stop(sweep: Sweep, running: dict[str, list], since: float, grace_s: float = 20) -> list[str]:
    """Stop the running cells (SIGTERM, SIGKILL after `grace_s`) and mark them interrupted:
    those still running, and those that ended after `since` without completing. Each is
    marked before it is waited for: a second Ctrl-C during the wait leaves the marks."""
    procs = {cid: proc for cid, (proc, ended) in list(running.items())
             if ended is None or ended >= since}
    for cid in procs:
        if not completed(sweep.cell_dir(cid)):
            mark(sweep.cell_dir(cid))
    for proc in procs.values():
        if proc.poll() is None:
            proc.terminate()
    deadline = time.time() + grace_s
    for proc in procs.values():
        try:
            proc.wait(max(deadline - time.time(), 0.1))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    stopped = []
    for cid in procs:
        if completed(sweep.cell_dir(cid)):       # it finished during the grace period
            (sweep.cell_dir(cid) / MARK).unlink(missing_ok=True)
        else:
            stopped.append(cid)
    return sorted(stopped)
