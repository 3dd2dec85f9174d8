"""The local executor: the same job callable on this machine, N cells at a time.

A cell is PENDING while the launcher that queued it lives, RUNNING while its process lives,
NOT_STARTED once that launcher is gone without starting it (Ctrl-C), CANCELLED if it was
stopped while it ran (`local.interrupted` in its folder), FAILED if its process ended without
a result (the tail of local.err says why).

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
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from launcher.executors.base import tail, Executor, ExecutorError, SchedulerState
from launcher.grid import Cell
from launcher.sweep import Sweep
from recsys_core.cli import INTERRUPTED
from recsys_core.train.results import read_result


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


INTERRUPTED_MARK = "local.interrupted"


class Interrupted(Exception):
    """Ctrl-C of a local sweep: what had finished, what was stopped, what never started.
    Each stopped cell has `local.interrupted` in its folder (status: CANCELLED)."""

    def __init__(self, codes: dict[str, int], stopped: list[str], not_started: list[str]):
        super().__init__(f"{len(codes)} finished, {len(stopped)} interrupted, "
                         f"{len(not_started)} not started")
        self.codes, self.stopped, self.not_started = codes, stopped, not_started


def plan(cells: list[Cell], workers: int | None, cells_per_gpu: int) -> tuple[list[str], int]:
    """(visible GPUs, cells at a time), or ValueError if these cells cannot run here so."""
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
    return gpus, workers


def run_cells(sweep: Sweep, cells: list[Cell], workers: int | None = None,
              log=print, cells_per_gpu: int = 1) -> dict[str, int]:
    """Run cells and wait for all of them; returns cell id → exit code. Ctrl-C stops the
    running cells (SIGTERM, then SIGKILL) and raises `Interrupted`."""
    gpus, workers = plan(cells, workers, cells_per_gpu)
    pool = GpuPool(gpus, cells_per_gpu)
    todo: queue.Queue = queue.Queue()
    for c in cells:
        todo.put(c)
    threads_per_cell = max(1, (os.cpu_count() or 1) // workers)
    codes: dict[str, int] = {}
    running: dict[str, list] = {}        # cell id → [process, time it ended or None]
    stopping = threading.Event()

    def worker() -> None:
        while not stopping.is_set():
            try:
                cell = todo.get_nowait()
            except queue.Empty:
                return
            mine = pool.take(gpus_needed(cell)) if gpus else None
            try:
                if not stopping.is_set():
                    code = run_one(sweep, cell, mine, threads_per_cell, log, running=running)
                    if not stopping.is_set():
                        codes[cell.id] = code
            finally:
                if mine:
                    pool.give(mine)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)      # short joins: Ctrl-C reaches this thread at once
    except KeyboardInterrupt:
        stopping.set()
        stopped = _stop(sweep, running, since=time.time() - INTERRUPT_SLACK_S)
        done = {c: code for c, code in codes.items() if c not in stopped}
        not_started = [c.id for c in cells if c.id not in done and c.id not in stopped]
        raise Interrupted(done, stopped, not_started) from None
    return codes


# Ctrl-C in a terminal reaches the cells' processes too, which may exit a moment before this
# process handles it: a cell that ended this shortly before counts as interrupted.
INTERRUPT_SLACK_S = 2.0


def _stop(sweep: Sweep, running: dict[str, list], since: float, grace_s: float = 20) -> list[str]:
    """Stop the running cells (SIGTERM, SIGKILL after `grace_s`) and mark them interrupted:
    those still running, and those that ended after `since` without completing."""
    procs = {cid: proc for cid, (proc, ended) in list(running.items())
             if ended is None or ended >= since}
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
        if _completed(sweep.cell_dir(cid)):
            continue
        (sweep.cell_dir(cid) / INTERRUPTED_MARK).write_text(f"{time.time()}\n")
        stopped.append(cid)
    return sorted(stopped)


def _completed(cell_dir: Path) -> bool:
    """The cell's process of this run (started when it wrote local.pid) left a COMPLETED result."""
    try:
        result = read_result(cell_dir)
        return bool(result) and result.get("status") == "COMPLETED" and \
            (cell_dir / "result.json").stat().st_mtime >= (cell_dir / "local.pid").stat().st_mtime
    except (OSError, ValueError):
        return False


def run_one(sweep: Sweep, cell: Cell, gpus: list[str] | None, threads: int, log,
            running: dict[str, list] | None = None) -> int:
    cell_dir = sweep.cell_dir(cell.id)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "CUDA_VISIBLE_DEVICES": ",".join(gpus or [])}
    started = time.time()
    (cell_dir / INTERRUPTED_MARK).unlink(missing_ok=True)
    with open(cell_dir / "local.out", "w") as out, open(cell_dir / "local.err", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "jobs.train_cell", str(cell_dir)],
                                stdout=out, stderr=err, env=env,
                                cwd=Path(__file__).resolve().parents[2])   # the checkout
        if running is not None:
            running[cell.id] = [proc, None]
        (cell_dir / "local.pid").write_text(str(proc.pid))
        code = proc.wait()
        if running is not None:
            running[cell.id][1] = time.time()
    log(f"{cell.id} {cell.name}: exit {code} after {time.time() - started:.1f}s"
        + (f" on GPU {','.join(gpus)}" if gpus else ""))
    return code


def _process_alive(pid, needle: str) -> bool:
    """pid is a live process whose command line holds `needle` (not a recycled pid)."""
    try:
        pid = int(pid)
        os.kill(pid, 0)
        return needle in Path(f"/proc/{pid}/cmdline").read_text()
    except (OSError, ValueError, TypeError):
        return False


def _since(path: Path, t: float) -> bool:
    """path exists and was written at or after time t (a second of clock slack)."""
    try:
        return path.stat().st_mtime >= t - 1
    except OSError:
        return False


class LocalExecutor(Executor):
    name = "local"
    help = "run the cells on this machine"
    cancels = "local process(es)"

    def submit(self, sweep: Sweep, cells: list[Cell]) -> None:
        try:
            plan(cells, self.options.workers, self.options.cells_per_gpu)
        except ValueError as e:
            raise ExecutorError(str(e)) from None
        # launcher_pid: while this process lives, a cell not started yet is queued (PENDING)
        sweep.record_submissions([{"cell": c.id, "executor": self.name, "job_id": None,
                                   "launcher_pid": os.getpid()} for c in cells])

    def wait(self, sweep: Sweep, cells: list[Cell]) -> int:
        print(f"running {len(cells)} cells locally → {sweep.root}", flush=True)
        try:
            codes = run_cells(sweep, cells, self.options.workers,
                              cells_per_gpu=self.options.cells_per_gpu)
        except Interrupted as e:
            ok = sum(code == 0 for code in e.codes.values())
            print(f"interrupted: {len(e.codes)} finished ({ok} completed, {len(e.codes) - ok} "
                  f"failed), {len(e.stopped)} interrupted, {len(e.not_started)} not started; "
                  f"`python -m launcher resume {sweep.root}` runs the rest", file=sys.stderr)
            return INTERRUPTED
        failed = [c for c, code in codes.items() if code != 0]
        print(f"{len(codes) - len(failed)} completed, {len(failed)} failed")
        return 1 if failed else 0

    def scheduler_states(self, sweep: Sweep, submissions: dict[str, dict]
                         ) -> dict[str, SchedulerState]:
        return {cid: self._state(sweep.cell_dir(cid), sub) for cid, sub in submissions.items()}

    @staticmethod
    def _state(cell_dir: Path, sub: dict) -> SchedulerState:
        started = _since(cell_dir / "local.pid", sub["time"])
        if started and _alive(cell_dir / "local.pid"):
            return SchedulerState("RUNNING")
        if _since(cell_dir / INTERRUPTED_MARK, sub["time"]):
            return SchedulerState("CANCELLED", "interrupted: the local sweep was stopped "
                                               "while it ran (resume runs it again)")
        if started:
            return SchedulerState("FAILED", tail(cell_dir / "local.err") or "no result file")
        if _process_alive(sub.get("launcher_pid"), "launcher"):
            return SchedulerState("PENDING", confirmed=False)
        return SchedulerState("NOT_STARTED", "not started: the local sweep stopped before it "
                                             "(resume runs it)")

    def cancel(self, sweep: Sweep, submissions: dict[str, dict]) -> int:
        killed = 0
        for cid in submissions:
            try:
                os.kill(int((sweep.cell_dir(cid) / "local.pid").read_text()), signal.SIGTERM)
                killed += 1
            except (OSError, ValueError):
                pass
        return killed




def _alive(pid_file: Path) -> bool:
    try:
        return _process_alive(pid_file.read_text(), "train_cell")
    except OSError:
        return False
