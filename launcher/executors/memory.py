"""How much GPU memory a queued cell will take, so that the local executor starts a cell on a
GPU only while the cells there fit in its memory (pool.py), instead of learning it from their
out-of-memory failures (oom.py).

In session 19, 12 long-history cells started together on one H200 (141 GB), and 7 of them ran
out of memory at their first evaluation. Their peaks were known: earlier attempts and other
seeds of the same configurations had recorded them (SASMamba at L 1,024 27 GB, xLSTM 2-4 GB).

A cell's need is the largest `peak_gpu_mem_mb` of its own earlier attempts (history.parquet:
torch's peak allocation, each epoch), else of the sweep's cells that differ from it in the seed
only. To that peak it adds what a process holds outside torch's allocations (its CUDA
context, cuBLAS' workspace, the allocator's rounding): need = peak × SLACK + CONTEXT_MB.
A cell nothing has measured needs 0, and the places alone limit it, as before. A GPU running no
cell of this run takes any cell: one that does not fit alone fails there as it would anyway.

The memory of a GPU is `--gpu-memory-gb` or, without it, what NVML reports. On a machine
without NVML (or a GPU it does not know) there is no memory limit. Only this run's cells are
counted, as for the places: launchers sharing a GPU each need their share in `--gpu-memory-gb`.
"""
from __future__ import annotations

import json
from pathlib import Path

from launcher.grid import Cell
from launcher.sweep import Sweep

SLACK = 1.1
CONTEXT_MB = 1024.0


def history_peak_mb(cell_dir: Path) -> float | None:
    """The largest per-epoch peak a cell's history records (None: no history, or no GPU)."""
    path = cell_dir / "history.parquet"
    if not path.exists():
        return None
    # ParquetFile, not read_table: read_table imports pyarrow.dataset and pandas, 0.55 s of a
    # launcher's start on an H100 host (results/benchmarks/grid_throughput_h100/README.md)
    import pyarrow.parquet as pq
    try:
        table = pq.ParquetFile(path).read(columns=["peak_gpu_mem_mb"])
    except (OSError, KeyError, ValueError):    # being rewritten
        return None
    if table.num_columns == 0:                 # a CPU run's
        return None
    column = table[0]
    peaks = [v for v in column.to_pylist() if v is not None]
    return max(peaks) if peaks else None


def _configuration(params: dict) -> str:
    return json.dumps({k: v for k, v in params.items() if k != "seed"}, sort_keys=True)


class MemoryNeeds:
    """Each cell's expected GPU memory, read again at each start: a seed that has run an epoch
    tells its siblings queued behind it."""

    def __init__(self, sweep: Sweep):
        self.sweep = sweep
        self.siblings: dict[str, list[str]] = {}      # configuration → cell ids
        for c in sweep.manifest()["cells"]:
            self.siblings.setdefault(_configuration(c["params"]), []).append(c["id"])

    def need_mb(self, cell: Cell) -> float:
        peak = history_peak_mb(self.sweep.cell_dir(cell.id))
        if peak is None:
            seen = [history_peak_mb(self.sweep.cell_dir(i))
                    for i in self.siblings.get(_configuration(cell.params), [])]
            peak = max((p for p in seen if p is not None), default=None)
        return 0.0 if peak is None else peak * SLACK + CONTEXT_MB

    def measured(self, cells: list[Cell]) -> int:
        """How many of these cells have a need known now."""
        return sum(self.need_mb(c) > 0 for c in cells)


def gpu_memory_mb(gpus: list[str], gpu_memory_gb: float | None) -> dict[str, float]:
    """Each GPU's memory in MB: `gpu_memory_gb` for all, else NVML's total of each it knows
    (GPUs named by index or by UUID, as CUDA_VISIBLE_DEVICES names them)."""
    if gpu_memory_gb is not None:
        if gpu_memory_gb <= 0:
            raise ValueError(f"--gpu-memory-gb {gpu_memory_gb}: must be more than 0")
        return {g: gpu_memory_gb * 1024 for g in gpus}
    if not gpus:
        return {}
    try:
        import pynvml
        pynvml.nvmlInit()
    except Exception:        # noqa: BLE001 -- no NVML library or no driver: no memory limit
        return {}
    found = {}
    try:
        for g in gpus:
            try:
                handle = (pynvml.nvmlDeviceGetHandleByIndex(int(g)) if g.strip().isdigit()
                          else pynvml.nvmlDeviceGetHandleByUUID(g.strip()))
                found[g] = pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**20
            except pynvml.NVMLError:
                continue
    finally:
        pynvml.nvmlShutdown()
    return found
