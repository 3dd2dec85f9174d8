"""What every executor is: the one seam between a sweep and where its cells run.

A sweep command asks an executor, by name, four things: can it run from here
(`unavailable_reason`), to take the cells (`submit`, under the sweep's lock, so two commands
never submit the same cells), to see them through (`wait`, after the lock is released), and
later, for `status`, what its scheduler says of each cell it was given (`scheduler_states`);
`cancel` stops cells. Everything else a cell's state needs comes from its result file
(launcher/status.py merges the two). A new executor is one module with a subclass of
`Executor` and one line in launcher/executors/__init__.py.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from launcher.executors.order import ORDERS
from launcher.grid import Cell
from launcher.sweep import Sweep

# A cell's states, as status shows them. ACTIVE: the scheduler has it; FINISHED: it ended.
STATES = ("PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED",
          "NOT_STARTED", "MISSING")
ACTIVE = ("PENDING", "RUNNING")
FINISHED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED")


class ExecutorError(RuntimeError):
    """The scheduler refused or could not be asked; the message is one line for the user."""


@dataclass(frozen=True)
class Options:
    """The command line's say in how cells run (each executor reads what concerns it)."""
    workers: int | None = None          # local: cells at a time
    cells_per_gpu: int = 1              # local: cells sharing one GPU
    process_per_cell: bool = False      # local: a fresh process per cell, not persistent workers
    mps: bool = False                   # local: an NVIDIA MPS daemon for the cells on GPUs
    order: str = "longest-first"        # local: which queued cell a free slot takes (order.py)
    gpu_memory_gb: float | None = None  # local: a GPU's memory to fit cells in (memory.py)
    cells_per_job: int | None = None    # slurm, dry-run: cells per job (else the resources')
    json: bool = False                  # dry-run: the cells as JSON on stdout


def options_from(args: argparse.Namespace) -> Options:
    return Options(workers=getattr(args, "workers", None),
                   cells_per_gpu=getattr(args, "cells_per_gpu", 1),
                   process_per_cell=getattr(args, "process_per_cell", False),
                   mps=getattr(args, "mps", False), order=getattr(args, "order", ORDERS[0]),
                   gpu_memory_gb=getattr(args, "gpu_memory_gb", None),
                   cells_per_job=getattr(args, "cells_per_job", None),
                   json=getattr(args, "json", False))


def _gigabytes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a number of GB") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text}: must be more than 0")
    return value


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 1")
    return value


def running_flags(p: argparse.ArgumentParser) -> None:
    """The flags of `sweep` and `resume` that say how the cells run."""
    p.add_argument("--process-per-cell", action="store_true",
                   help="local: a fresh process for every cell instead of persistent workers "
                        "that run cell after cell")
    p.add_argument("--mps", action="store_true",
                   help="local: run the cells on GPUs as clients of an NVIDIA MPS daemon "
                        "started for the run, so cells sharing a GPU (--cells-per-gpu) run "
                        "their kernels at the same time; slurm: refused (ask for gres/mps)")
    p.add_argument("--order", choices=ORDERS, default=ORDERS[0],
                   help="local: which queued cell a free slot takes next: the expected-longest "
                        "first (default; the longest cell bounds the wall time) or the grid's")
    p.add_argument("--gpu-memory-gb", type=_gigabytes, default=None, metavar="GB",
                   help="local: start a cell on a GPU only while the measured peaks of the "
                        "cells on it fit in GB (default: the GPU's memory as NVML reports it)")
    p.add_argument("--cells-per-job", type=_at_least_one, default=None, metavar="K",
                   help="slurm, dry-run: run K cells one after another in each job (an array "
                        "task); default: the grid's resources.cells_per_job, else 1")


@dataclass(frozen=True)
class SchedulerState:
    """What an executor knows of a cell's latest submission. A confirmed ACTIVE state wins
    over any result file; anything else (an ended state, or a guess such as "queued, the
    accounting has not caught up yet") stands only where the cell left no result written
    after the submission."""
    state: str
    reason: str | None = None
    confirmed: bool = True


class Executor:
    name: ClassVar[str]
    help: ClassVar[str]
    records_submissions: ClassVar[bool] = True   # False: a dry run (nothing to resume or cancel)
    cancels: ClassVar[str | None] = None         # what `cancel` stops, e.g. "SLURM job(s)"

    def __init__(self, options: Options = Options()):
        self.options = options

    def unavailable_reason(self) -> str | None:
        """Why cells cannot be submitted from here (asked before anything is written)."""
        return None

    def preview(self, cells: list[Cell]) -> None:
        """Shown before the sweep folder is written."""

    def submit(self, sweep: Sweep, cells: list[Cell]) -> None:
        """Hand the cells over and record their submissions (`sweep.record_submissions`).
        Runs under the sweep's lock. Raises ExecutorError if refused."""
        raise NotImplementedError

    def wait(self, sweep: Sweep, cells: list[Cell]) -> int:
        """After `submit`, outside the lock: the exit code of the command (0: all is well)."""
        return 0

    def scheduler_states(self, sweep: Sweep, submissions: dict[str, dict]
                         ) -> dict[str, SchedulerState]:
        """cell id → what the scheduler says of its latest submission (given: cell id → that
        submission, for the cells this executor ran). One scheduler query for them all."""
        return {}

    def cancel(self, sweep: Sweep, submissions: dict[str, dict]) -> int:
        """Stop these cells' latest submissions; how many jobs or processes were stopped."""
        return 0


def written_since(path: Path, t: float) -> bool:
    """path exists and was written at or after time t (a second of clock slack)."""
    try:
        return path.stat().st_mtime >= t - 1
    except OSError:
        return False


def tail(path: Path, lines: int = 5) -> str | None:
    """The last non-empty lines of a log (a failed job's reason), None if there are none."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return None
    return "\n".join([line for line in text if line.strip()][-lines:]) or None
