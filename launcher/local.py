"""The local executor: the same job callable on this machine, N cells at a time.

Each cell runs as `python -m jobs.train_cell CELL_DIR` in its own process (so a crash or a
CUDA context never leaks into the next cell), through a queue of `workers` slots. With GPUs,
each slot owns one GPU (CUDA_VISIBLE_DEVICES), so cells never pile onto the same device;
without GPUs the slots share the CPU cores (threads split between them).
"""
from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from launcher.grid import Cell
from launcher.sweep import Sweep


def visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
        return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]
    except (OSError, subprocess.SubprocessError):
        return []


def run_cells(sweep: Sweep, cells: list[Cell], workers: int | None = None,
              log=print) -> dict[str, int]:
    """Run cells and wait for all of them; returns cell id → exit code."""
    gpus = visible_gpus()
    if workers is None:
        workers = len(gpus) or 1
    if gpus and workers > len(gpus):
        raise ValueError(f"--workers {workers} > {len(gpus)} visible GPUs: one GPU per job")
    todo: queue.Queue = queue.Queue()
    for c in cells:
        todo.put(c)
    threads_per_cell = max(1, (os.cpu_count() or 1) // workers)
    codes: dict[str, int] = {}
    sweep.record_submissions([{"cell": c.id, "executor": "local", "job_id": None} for c in cells])

    def worker(gpu: str | None) -> None:
        while True:
            try:
                cell = todo.get_nowait()
            except queue.Empty:
                return
            codes[cell.id] = run_one(sweep, cell, gpu, threads_per_cell, log)

    pool = [threading.Thread(target=worker, args=(gpus[i] if gpus else None,), daemon=True)
            for i in range(workers)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return codes


def run_one(sweep: Sweep, cell: Cell, gpu: str | None, threads: int, log) -> int:
    cell_dir = sweep.cell_dir(cell.id)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "CUDA_VISIBLE_DEVICES": gpu if gpu is not None else ""}
    started = time.time()
    with open(cell_dir / "local.out", "w") as out, open(cell_dir / "local.err", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "jobs.train_cell", str(cell_dir)],
                                stdout=out, stderr=err, env=env,
                                cwd=Path(__file__).resolve().parents[1])
        (cell_dir / "local.pid").write_text(str(proc.pid))
        code = proc.wait()
    log(f"{cell.id} {cell.name}: exit {code} after {time.time() - started:.1f}s"
        + (f" on GPU {gpu}" if gpu is not None else ""))
    return code
