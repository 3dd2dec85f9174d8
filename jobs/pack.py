"""A pack: several cells in one SLURM job (one array task), run one after another on its GPU by
one `Worker` (jobs/worker.py), so the job's start-up is paid once for them all. Many clusters
cap the jobs a user may queue; a pack of K cells queues one job for K cells.

Per cell, as for a job of one cell: a cell already COMPLETED is skipped, a failing cell is
recorded FAILED and the next one runs, and the cell's `requeues.json` bounds its requeues.
On SLURM's pre-timeout/preemption signal (USR2) submitit calls `checkpoint()`, which requeues a
pack of the unfinished cells only (the one interrupted resumes from its last epoch checkpoint).
`launcher cancel --cells ID` of some cells of a running pack marks them (`cancelled.json` in
the cell folder) and sends the job USR1: the pack skips a marked cell, and stops a marked cell
that is running (the interrupted cell leaves no result, like a cancelled job of one cell).
The job fails if any of its cells did, so that SLURM's state agrees with the result files.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import submitit

from jobs.train_cell import DEFAULT_MAX_REQUEUES, count_requeue, write_held_epochs

CANCELLED = "cancelled.json"


class CellCancelled(BaseException):
    """Raised in the running cell when `launcher cancel` stops it (not an Exception: the
    trainer records no FAILED result for it)."""


def completed(cell_dir: str) -> bool:
    from recsys_core.train.results import read_result
    try:
        return (read_result(Path(cell_dir)) or {}).get("status") == "COMPLETED"
    except ValueError:
        return False


def cancelled(cell_dir: str) -> bool:
    return (Path(cell_dir) / CANCELLED).exists()


def inside_import(frame) -> bool:
    """Whether the interrupted code is running a module's import (importlib's frames)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


class TrainPack(submitit.helpers.Checkpointable):
    def __init__(self, cell_dirs: list[str], max_requeues: int = DEFAULT_MAX_REQUEUES):
        self.cell_dirs = [str(d) for d in cell_dirs]
        self.max_requeues = max_requeues
        self.finished: set[str] = set()      # this run's cells that completed, failed or were skipped
        self.current: str | None = None

    def __call__(self) -> dict:
        from jobs.worker import Worker
        signal.signal(signal.SIGUSR1, self._cancel_current)
        worker = Worker("pack")
        failed = []
        for i, cell_dir in enumerate(self.cell_dirs):
            name = Path(cell_dir).name
            before = "completed" if completed(cell_dir) else \
                "cancelled" if cancelled(cell_dir) else None
            if before:
                print(f"== cell {name} ({i + 1}/{len(self.cell_dirs)}): {before} before, skipped",
                      flush=True)
                self.finished.add(cell_dir)
                continue
            print(f"== cell {name} ({i + 1}/{len(self.cell_dirs)})", flush=True)
            print(f"== cell {name}", file=sys.stderr, flush=True)
            self.current = cell_dir
            try:
                # the first cell's start-up is the job's: from the process's start
                ok = worker.run(cell_dir, handed_at=time.time() if worker.cells_run else None)
            except CellCancelled:
                print(f"cell {name}: cancelled while it ran", file=sys.stderr, flush=True)
                ok = True
            self.current = None
            self.finished.add(cell_dir)
            if not ok:
                failed.append(name)
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(self.cell_dirs)} cells failed: "
                               f"{', '.join(failed)} (each cell's result.json says why)")
        return {"cells": len(self.cell_dirs)}

    def _cancel_current(self, signum, frame) -> None:
        if self.current is None or not cancelled(self.current):
            return
        if inside_import(frame):
            # Raised in the middle of an import, the exception would leave that module half
            # made for the pack's next cell (torch._dynamo, imported by a cell's first
            # optimiser: its next import failed on duplicate registrations, CI, session 12).
            # The signal comes again shortly, once the import is done.
            threading.Timer(0.2, os.kill, (os.getpid(), signum)).start()
            return
        raise CellCancelled(self.current)

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on USR2: the running cell's last finished epoch written, then
        a pack of the cells not finished in this run requeued (each within its own requeue
        bound); None if there are none."""
        write_held_epochs()
        todo = [d for d in self.cell_dirs if d not in self.finished and not completed(d)
                and not cancelled(d)]
        todo = [d for d in todo if count_requeue(d, self.max_requeues)]
        if not todo:
            return None
        print(f"requeuing a pack of {len(todo)} unfinished cell(s): "
              + json.dumps([Path(d).name for d in todo]), file=sys.stderr, flush=True)
        return submitit.helpers.DelayedSubmission(TrainPack(todo, self.max_requeues))
