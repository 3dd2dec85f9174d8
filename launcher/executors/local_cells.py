"""A local sweep's cells as other commands see them: `status` reads their state from the files
the launcher and the cell processes write, `cancel` stops them.

A local sweep's queue lives in its launcher's process, which `cancel` (another process) cannot
reach. So `cancel` marks each cell it cancels (`cancelled.json` in the cell folder, as for a
cell of a SLURM pack) and stops the process of a running one (SIGTERM); the launcher skips a
marked cell instead of starting it, as SLURM drops a cancelled job that has not started.
Submitting the cell again (`resume`, `sweep --extend`) lifts the mark.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from jobs.pack import CANCELLED
from launcher.executors import interrupt
from launcher.executors.base import SchedulerState, tail, written_since
from launcher.sweep import Sweep
from recsys_core.atomic import atomic_write_text

EXIT_FILE = "local.exit"   # the cell's exit code, written by the launcher when its process ends
SKIPPED = -(2 ** 16)       # a cell's code in the launcher's summary: cancelled before it started


def process_alive(pid, needle: str) -> bool:
    """pid is a live process whose command line holds `needle` (not a recycled pid)."""
    try:
        pid = int(pid)
        os.kill(pid, 0)
        return needle in Path(f"/proc/{pid}/cmdline").read_text()
    except (OSError, ValueError, TypeError):
        return False


def running(cell_dir: Path) -> bool:
    """The process in local.pid lives and has not reported this cell done (local.exit)."""
    pid_file = cell_dir / "local.pid"
    try:
        if written_since(cell_dir / EXIT_FILE, pid_file.stat().st_mtime + 1):
            return False
        return process_alive(pid_file.read_text(), "jobs.")
    except OSError:
        return False


def state(cell_dir: Path, sub: dict) -> SchedulerState:
    started = written_since(cell_dir / "local.pid", sub["time"])
    if started and running(cell_dir):
        return SchedulerState("RUNNING")
    if written_since(cell_dir / interrupt.MARK, sub["time"]):
        if written_since(cell_dir / CANCELLED, sub["time"]):
            return SchedulerState("CANCELLED", "cancelled while it ran (resume runs it again)")
        return SchedulerState("CANCELLED", "interrupted: Ctrl-C or a stop ended it while "
                                           "it ran (resume runs it again)")
    if started:
        return SchedulerState("FAILED", tail(cell_dir / "local.err") or "no result file")
    if written_since(cell_dir / CANCELLED, sub["time"]):
        return SchedulerState("CANCELLED", "cancelled before it started (resume runs it)")
    if process_alive(sub.get("launcher_pid"), "launcher"):
        return SchedulerState("PENDING", confirmed=False)
    return SchedulerState("NOT_STARTED", "not started: the local sweep stopped before it "
                                         "(resume runs it)")


def cancel(sweep: Sweep, submissions: dict[str, dict]) -> int:
    """Mark the cells that are queued or running, then stop the running ones; returns how
    many were cancelled. Marking first: a cell the launcher starts meanwhile is either seen
    running here (and stopped) or sees its mark there (and is skipped)."""
    hit = []
    for cid, sub in submissions.items():
        cell_dir = sweep.cell_dir(cid)
        if state(cell_dir, sub).state in ("PENDING", "RUNNING"):
            atomic_write_text(cell_dir / CANCELLED, json.dumps({"time": time.time()}))
            hit.append(cell_dir)
    for cell_dir in hit:
        if running(cell_dir):   # a worker's pid: it may be running another cell now
            try:
                os.kill(int((cell_dir / "local.pid").read_text()), signal.SIGTERM)
            except (OSError, ValueError):
                pass
    return len(hit)
