"""The local executor: the same job callable on this machine, N cells at a time.

Each cell runs as `python -m jobs.train_cell CELL_DIR` in its own process (so a crash or a
CUDA context never leaks into the next cell), through a queue of `workers` slots. With GPUs, a
cell takes the GPUs its resources ask for (`gpus` x `nodes`: a multi-GPU cell gets that many
devices in CUDA_VISIBLE_DEVICES and runs `accelerate launch` over them) from a pool in which
each GPU holds `cells_per_gpu` cells at once (default 1; small models leave a GPU mostly idle,
so several of their cells can share it). A cell asking for no GPU runs on the CPU. Without GPUs
the slots share the CPU cores (threads split between them).
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


class GpuPool:
    """GPUs with `per_gpu` places each; `take(n)` blocks until n distinct GPUs have a free
    place and returns the least loaded ones."""

    def __init__(self, gpus: list[str], per_gpu: int):
        self.free = {g: per_gpu for g in gpus}
        self.cond = threading.Condition()

    def take(self, n: int) -> list[str]:
        if n == 0:
            return []
        with self.cond:
            while sum(1 for v in self.free.values() if v > 0) < n:
                self.cond.wait()
            chosen = sorted(self.free, key=lambda g: -self.free[g])[:n]
            for g in chosen:
                self.free[g] -= 1
            return chosen

    def give(self, gpus: list[str]) -> None:
        with self.cond:
            for g in gpus:
                self.free[g] += 1
            self.cond.notify_all()


def gpus_needed(cell: Cell) -> int:
    return cell.resources.gpus * cell.resources.nodes


def run_cells(sweep: Sweep, cells: list[Cell], workers: int | None = None,
              log=print, cells_per_gpu: int = 1) -> dict[str, int]:
    """Run cells and wait for all of them; returns cell id → exit code."""
    gpus = visible_gpus()
    if cells_per_gpu < 1:
        raise ValueError(f"--cells-per-gpu {cells_per_gpu}: must be at least 1")
    if gpus:
        too_big = [c for c in cells if gpus_needed(c) > len(gpus)]
        if too_big:
            c = too_big[0]
            raise ValueError(f"cell {c.id} ({c.name}) asks for {gpus_needed(c)} GPUs, "
                             f"{len(gpus)} visible here ({len(too_big)} such cells)")
    if workers is None:
        workers = len(gpus) * cells_per_gpu or 1
    if workers < 1:
        raise ValueError(f"--workers {workers}: must be at least 1")
    pool = GpuPool(gpus, cells_per_gpu)
    todo: queue.Queue = queue.Queue()
    for c in cells:
        todo.put(c)
    threads_per_cell = max(1, (os.cpu_count() or 1) // workers)
    codes: dict[str, int] = {}
    sweep.record_submissions([{"cell": c.id, "executor": "local", "job_id": None} for c in cells])

    def worker() -> None:
        while True:
            try:
                cell = todo.get_nowait()
            except queue.Empty:
                return
            mine = pool.take(gpus_needed(cell)) if gpus else None
            try:
                codes[cell.id] = run_one(sweep, cell, mine, threads_per_cell, log)
            finally:
                if mine:
                    pool.give(mine)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return codes


def run_one(sweep: Sweep, cell: Cell, gpus: list[str] | None, threads: int, log) -> int:
    cell_dir = sweep.cell_dir(cell.id)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "CUDA_VISIBLE_DEVICES": ",".join(gpus or [])}
    started = time.time()
    with open(cell_dir / "local.out", "w") as out, open(cell_dir / "local.err", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "jobs.train_cell", str(cell_dir)],
                                stdout=out, stderr=err, env=env,
                                cwd=Path(__file__).resolve().parents[1])
        (cell_dir / "local.pid").write_text(str(proc.pid))
        code = proc.wait()
    log(f"{cell.id} {cell.name}: exit {code} after {time.time() - started:.1f}s"
        + (f" on GPU {','.join(gpus)}" if gpus else ""))
    return code
