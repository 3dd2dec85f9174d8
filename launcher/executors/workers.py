"""The local executor's persistent workers: `python -m jobs.worker` processes that run cell
after cell (jobs/worker.py), so that a cell does not pay for a new interpreter, the imports,
the CUDA context, compiled kernels and its dataset's tensors (all kept in the worker).

Each of the executor's slots (threads) keeps its own workers, one per device it ran cells on:
one for the CPU (cells asking for no GPU) and one per GPU, started when first needed and kept
until the sweep ends; the first may be the spare the launcher started before reading the grid
(spare_worker.py). A worker that dies (a crash, a kill) takes only the cell it was running;
the slot starts a new one for its next cell.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from launcher import spare_worker
from launcher.executors.mps import MpsDaemon
from recsys_core.cli import CELLS_PER_GPU_ENV, INTERRUPTED

REPO = Path(__file__).resolve().parents[2]
LOG_DIR = "workers"     # SWEEP/workers/: each worker's own output outside its cells


def process_env(gpus: list[str], threads: int, mps: MpsDaemon | None = None,
                cells_per_gpu: int = 1) -> dict[str, str]:
    """The environment of a process running cells on `gpus` (none: the CPU); with `mps`, a
    process on a GPU is a client of that MPS daemon. It is told how many cells may share its
    GPUs (a shared GPU's trainer gives back its evaluation's memory: recsys_core/train/setup.py)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "CUDA_VISIBLE_DEVICES": ",".join(gpus)}
    # It runs in the launcher's directory, where the sweep's and the data mirror's relative
    # paths mean what the user typed (as a SLURM job runs where it was submitted), and
    # imports this checkout's `jobs` from there too.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.pop(CELLS_PER_GPU_ENV, None)
    if gpus:
        env[CELLS_PER_GPU_ENV] = str(cells_per_gpu)
    if mps is not None and gpus:
        env.update(mps.client_env(gpus))
    return env


class WorkerProcess:
    def __init__(self, gpus: list[str], threads: int, log: Path, mps: MpsDaemon | None = None,
                 cells_per_gpu: int = 1):
        env = process_env(gpus, threads, mps, cells_per_gpu)
        log.parent.mkdir(parents=True, exist_ok=True)
        self.proc = spare_worker.take(env, log)     # the one started with the launcher
        if self.proc is not None:
            return
        with open(log, "a") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "jobs.worker"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=err, env=env, text=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def end_input(self) -> None:
        """EOF on the worker's input: it ends after its current cell."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, cell_dir: Path, out: Path, err: Path) -> int:
        """Run one cell in the worker: 0 completed, 1 failed, 130 interrupted (Ctrl-C: the
        worker ends after answering so, and is waited for: the slot's next cell gets a new
        one); if the worker died meanwhile, its exit code (negative: the signal that ended it)."""
        request = {"cell": str(cell_dir), "out": str(out), "err": str(err), "sent": time.time()}
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            reply = self.proc.stdout.readline()
        except (BrokenPipeError, OSError):
            reply = ""
        if not reply:
            code = self.proc.wait()
            return code or 1
        code = int(json.loads(reply)["code"])
        if code == INTERRUPTED:
            self.proc.wait()
        return code

    def close(self, timeout: float = 60) -> None:
        """End the worker once its current cell is done (EOF on its input)."""
        self.end_input()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Workers:
    """One slot's workers, by the GPUs they see (() for the CPU)."""

    def __init__(self, log_dir: Path, threads: int, mps: MpsDaemon | None = None,
                 cells_per_gpu: int = 1):
        self.log_dir, self.threads, self.mps = log_dir, threads, mps
        self.cells_per_gpu = cells_per_gpu
        self.by_gpus: dict[tuple[str, ...], WorkerProcess] = {}
        self.started = 0
        # the slot's thread and the launcher's main thread (at its end, or on Ctrl-C) may both
        # close them: one of them takes the workers, the other finds none
        self.lock = threading.Lock()

    def get(self, gpus: list[str]) -> WorkerProcess:
        key = tuple(gpus)
        with self.lock:
            worker = self.by_gpus.get(key)
            if worker is None or not worker.alive():
                self.started += 1
                log = self.log_dir / f"{os.getpid()}-{id(self):x}-{self.started}.log"
                worker = self.by_gpus[key] = WorkerProcess(list(gpus), self.threads, log,
                                                             self.mps, self.cells_per_gpu)
        return worker

    def gpus(self) -> list[str]:
        """The GPUs this slot has a live worker on (the ones it prefers to take again)."""
        with self.lock:
            return [g for key, w in self.by_gpus.items() if len(key) == 1 and w.alive()
                    for g in key]

    def close(self) -> None:
        with self.lock:
            workers = list(self.by_gpus.values())
            self.by_gpus.clear()
        # All told first, then waited for: a worker's exit (CUDA context, compile pools) takes
        # seconds, and waiting for each in turn added up to a minute at the end of a grid.
        for worker in workers:
            worker.end_input()
        for worker in workers:
            worker.close()
