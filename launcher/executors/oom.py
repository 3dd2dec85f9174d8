"""A cell that ran out of GPU memory because other cells shared its GPU is run again, not failed.

`--cells-per-gpu K` is a guess: too high, and the cells on a GPU fill its memory together and
die of CUDA out-of-memory errors (on one H200, 25 of 28 cells at once). A wrong guess should
cost time, not cells. So when a cell the local executor ran on GPUs ends FAILED with such an
error (its result's reason; without a result of this attempt, the end of its local.err) and
other cells of this run held one of its GPUs while it ran (pool.py), the executor lowers the
places of those GPUs to one fewer than the most cells that shared them while it ran (never
below one: fewer cells share them from then on) and queues the cell again, at the back, up to
`TRIES` tries in all; the try after continues from the cell's last epoch checkpoint.
Several cells that die of one crowd lower the places once: in session 19, 7 of 12 cells ran
out of memory within 15 s of each other, and lowering by one per failure took the places from
12 to 5, where the next three calls stayed (below). A cell that ran out of memory alone on its
GPUs is FAILED at once: it will never fit. Only this run's cells are counted: another launcher's cells on the same GPU
are not seen, so beside them a cell counts as alone.

Each event prints one line and is appended to the cell's `oom_retries.json` (jobs/train_cell
records how many in the cell's next result, `oom_retries`); the run's summary counts them.

The lowered places outlive the run: they are kept in the sweep's `gpu_places.json`, and a later
run of the sweep (`resume`, another `sweep` into it) starts its GPUs at no more places than
that (`restore`; one line says so). Without it, a resume after a call's time ran out started
24 long cells at once again, and the same cascade of retries cost the first minute again
(session 18). Delete the file to start from `--cells-per-gpu` again.
"""
from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

from jobs.train_cell import OOM_RETRIES_FILE
from launcher.executors.base import tail, written_since
from launcher.executors.pool import GpuPool, Lease
from launcher.grid import Cell
from launcher.sweep import Sweep
from recsys_core.atomic import atomic_write_text
from recsys_core.train.results import read_result

TRIES = 3
# torch's own error and the CUDA runtime's, and cuBLAS/cuDNN failing to allocate workspace;
# not a host MemoryError, not Triton's OutOfResources (a kernel's shared memory: no neighbour
# causes it)
OOM = re.compile(r"OutOfMemoryError|CUDA out of memory|CUDA error: out of memory|"
                 r"CUDA_ERROR_OUT_OF_MEMORY|cudaErrorMemoryAllocation|"
                 r"CUBLAS_STATUS_ALLOC_FAILED|CUDNN_STATUS_ALLOC_FAILED")
ERR_LINES = 20          # of local.err, where the failure is said when no result was written
PLACES_FILE = "gpu_places.json"     # in the sweep's folder: GPU → its places, as lowered


def oom_reason(cell_dir: Path, since: float) -> str | None:
    """The line saying the cell's attempt begun at `since` ran out of GPU memory; None if it
    failed otherwise."""
    text = None
    if written_since(cell_dir / "result.json", since):
        try:
            result = read_result(cell_dir) or {}
            text = result.get("reason") if result.get("status") == "FAILED" else ""
        except ValueError:      # unreadable: the log says what happened
            text = None
    if text is None:
        text = tail(cell_dir / "local.err", ERR_LINES)
    for line in reversed((text or "").splitlines()):
        if OOM.search(line):
            return line.strip()[:300]
    return None


class OomRetries:
    """The run's out-of-memory retries: `again` decides, after a cell's FAILED attempt."""

    def __init__(self, sweep: Sweep, log=print, tries: int = TRIES):
        self.sweep, self.log, self.tries = sweep, log, tries
        self.tried: dict[str, int] = {}          # cell id → its failed tries so far
        self.places: dict[str, int] = {}         # GPU → its places, where lowered
        self.count = 0
        self.lock = threading.Lock()

    def again(self, cell: Cell, lease: Lease, pool: GpuPool, since: float) -> bool:
        """True if the cell, whose attempt on `lease` begun at `since` FAILED, is to be queued
        again (the caller then clears what says the try FAILED)."""
        cell_dir = self.sweep.cell_dir(cell.id)
        reason = oom_reason(cell_dir, since) if lease.gpus else None
        if reason is None:
            return False
        shared = lease.shared()
        where = f"{cell.id} {cell.name}: out of GPU memory on GPU {','.join(lease.gpus)}"
        if not shared:
            self.log(f"{where}, alone there: FAILED (it does not fit even alone)")
            return False
        crowd = max(lease.crowd[g] for g in shared)
        with self.lock:
            places = pool.lower({g: lease.crowd[g] for g in shared})
            self.places.update(places)
            k = self.tried[cell.id] = self.tried.get(cell.id, 0) + 1
            retry = k < self.tries
            self.count += retry
        now = ", ".join(f"GPU {g} {n}" for g, n in places.items())
        self.log(f"{where} shared by {crowd} cells; places now {now}; try {k} of {self.tries}"
                 + (": queued again" if retry else ": FAILED"))
        self._keep(places)
        if retry:
            record(cell_dir, {"try": k, "gpus": lease.gpus, "shared_by": crowd,
                              "places_now": places, "reason": reason, "time": time.time()})
        return retry

    def restore(self, pool: GpuPool) -> None:
        """Start the pool's GPUs at no more places than an earlier run of the sweep left."""
        path = self.sweep.root / PLACES_FILE
        try:
            kept = json.loads(path.read_text())["places"] if path.exists() else {}
            lowered = pool.limit({str(g): int(n) for g, n in kept.items()})
        except (ValueError, KeyError, TypeError, AttributeError, OSError) as e:
            self.log(f"warning: {path}: unreadable ({e}); the GPUs start at --cells-per-gpu")
            return
        if lowered:
            self.places.update(lowered)
            now = ", ".join(f"GPU {g} {n}" for g, n in sorted(lowered.items()))
            self.log(f"places: {now} (an earlier run of this sweep lowered them after cells ran "
                     f"out of GPU memory; delete {path} to start from --cells-per-gpu)")

    def _keep(self, places: dict[str, int]) -> None:
        path = self.sweep.root / PLACES_FILE
        with self.lock:
            try:
                kept = json.loads(path.read_text())["places"] if path.exists() else {}
            except (ValueError, KeyError, OSError):
                kept = {}
            kept.update({g: min(n, kept.get(g, n)) for g, n in places.items()})
            try:        # the run goes on with its places lowered even if the file fails
                atomic_write_text(path, json.dumps({"places": kept}, indent=1))
            except OSError as e:
                self.log(f"warning: {path}: not written ({e}); a later run starts at "
                         f"--cells-per-gpu")

    def summary(self) -> str:
        """The summary line's part: ", N retried after running out of GPU memory (...)"."""
        if not self.count:
            return ""
        places = ", ".join(f"GPU {g} {n}" for g, n in sorted(self.places.items()))
        return f", {self.count} retried after running out of GPU memory (places now {places})"


def record(cell_dir: Path, event: dict) -> None:
    path = cell_dir / OOM_RETRIES_FILE
    events = json.loads(path.read_text())["retries"] if path.exists() else []
    atomic_write_text(path, json.dumps({"retries": [*events, event]}, indent=1))

