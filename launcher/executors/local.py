"""The local executor: the same job on this machine, N cells at a time.

A cell is PENDING while the launcher that queued it lives, RUNNING while the process running
it lives and has not reported it done, NOT_STARTED once that launcher is gone without starting
it (Ctrl-C), CANCELLED if Ctrl-C or a stop ended it while it ran (`local.interrupted` in its
folder; interrupt.py) or `launcher cancel` reached it before it started (local_cells.py),
FAILED if it ended without a result (the tail of local.err says why).

Cells run through a queue of `workers` slots. By default each slot runs its cells in
persistent worker processes (`python -m jobs.worker`, workers.py): imports, CUDA context,
compiled kernels and prepared data are paid once per worker, not once per cell; a cell that
fails is recorded and the worker goes on. `process_per_cell` runs each cell as
`python -m jobs.train_cell CELL_DIR` in a fresh process instead (as before workers; the
throughput benchmark compares the two). A cell's stdout and stderr go to local.out and
local.err in its folder either way. With GPUs, a cell takes the GPUs its resources ask for
(`gpus` x `nodes`: a multi-GPU cell gets that many devices in CUDA_VISIBLE_DEVICES and runs
`accelerate launch` over them, always in a process of its own) from a pool in which each GPU
holds `cells_per_gpu` cells at once (default 1; small models leave a GPU mostly idle, so
several of their cells can share it; pool.py). A cell that runs out of GPU memory beside
other cells lowers its GPU's places and is queued again (oom.py). A cell asking for no GPU
runs on the CPU. Without GPUs the slots share the CPU cores (threads split between them).
`mps`: the processes on GPUs are clients of an NVIDIA MPS daemon kept for the run (mps.py),
so cells sharing a GPU run their kernels at the same time instead of taking turns. `order`:
the queue's order, by default the expected-longest cells first (order.py).
"""
from __future__ import annotations

import functools
import os
import queue
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from jobs.pack import CANCELLED, cancelled
from launcher.executors import interrupt, local_cells, order
from launcher.executors.base import Executor, ExecutorError, SchedulerState
from launcher.executors.interrupt import INTERRUPT_SLACK_S, Interrupted
from launcher.executors.local_cells import EXIT_FILE, SKIPPED
from launcher.executors.memory import MemoryNeeds, gpu_memory_mb
from launcher.executors.mps import MpsDaemon, MpsError, available
from launcher.executors.oom import OomRetries
from launcher.executors.pool import GpuPool
from launcher.executors.workers import LOG_DIR, Workers, process_env
from launcher.grid import Cell
from launcher.sweep import Sweep
from recsys_core.cli import INTERRUPTED


def visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    return list(_listed_gpus())


@functools.cache
def _listed_gpus() -> tuple[str, ...]:
    """The GPUs `nvidia-smi -L` lists, asked once per launcher: a sweep plans its cells twice
    (submit, then run), and each call is a process that starts NVML before the first cell."""
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
        return tuple(str(i) for i, line in enumerate(out.stdout.splitlines())
                     if line.startswith("GPU "))
    except (OSError, subprocess.SubprocessError):
        return ()


def gpus_needed(cell: Cell) -> int:
    return cell.resources.gpus * cell.resources.nodes


def uses_gpus(gpus: list[str], cells: list[Cell]) -> bool:
    """Some of the cells run on the GPUs visible here."""
    return bool(gpus) and any(gpus_needed(c) > 0 for c in cells)


def start_mps(sweep: Sweep, cells: list[Cell]) -> MpsDaemon | None:
    """--mps: the MPS daemon the cells' GPU processes use (None, and a line saying so, if no
    cell runs on a GPU here); MpsError if it cannot be had."""
    gpus = visible_gpus()
    if not uses_gpus(gpus, cells):
        print("--mps: no cell runs on a GPU here; MPS is not started", flush=True)
        return None
    mps = MpsDaemon.start(sweep.root, gpus)
    print(f"MPS: {'started a daemon' if mps.owned else 'using the daemon listening'} on "
          f"{mps.pipe} (its logs: {mps.log})", flush=True)
    return mps


def plan(cells: list[Cell], workers: int | None, cells_per_gpu: int) -> tuple[list[str], int]:
    """(visible GPUs, cells at a time), or ValueError if these cells cannot run here so."""
    gpus = visible_gpus()
    if cells_per_gpu < 1:
        raise ValueError(f"--cells-per-gpu {cells_per_gpu}: must be at least 1")
    on_cuda = [c for c in cells if c.config.device == "cuda"]
    if on_cuda and not gpus:
        c = on_cuda[0]
        raise ValueError(f"cell {c.id} ({c.name}) sets device=cuda and no GPU is visible here "
                         f"({len(on_cuda)} such cells): set device auto (the CPU where there is "
                         "no GPU) or cpu, or run them where there are GPUs")
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
              log=print, cells_per_gpu: int = 1, process_per_cell: bool = False,
              mps: MpsDaemon | None = None, oom: OomRetries | None = None,
              gpu_memory_gb: float | None = None) -> dict[str, int]:
    """Run cells and wait for all of them; returns cell id → exit code (INTERRUPTED: a cell
    whose process said it was interrupted, marked so; interrupt.py). Ctrl-C stops the running
    cells (SIGTERM, then SIGKILL) and raises `Interrupted`. `mps`: the processes on GPUs are
    that MPS daemon's clients. `oom`: the out-of-memory retries (their count, oom.py).
    `gpu_memory_gb`: each GPU's memory to fit the cells' expected needs in (memory.py)."""
    gpus, workers = plan(cells, workers, cells_per_gpu)
    asking = sum(gpus_needed(c) > 0 for c in cells)
    if asking and not gpus:
        log(f"note: {asking} cell(s) ask for GPUs and none is visible here: they run on the CPU")
    memory = gpu_memory_mb(gpus, gpu_memory_gb) if uses_gpus(gpus, cells) else {}
    pool = GpuPool(gpus, cells_per_gpu, memory)
    needs = MemoryNeeds(sweep) if memory else None
    if needs:
        log(f"memory: {', '.join(f'GPU {g} {mb / 1024:.0f} GB' for g, mb in memory.items())}; "
            f"a cell starts on a GPU while the measured peaks of the cells there fit "
            f"({needs.measured(cells)} of {len(cells)} cells measured, or a seed of theirs)")
    oom = oom or OomRetries(sweep, log)
    oom.restore(pool)
    todo: queue.Queue = queue.Queue()
    for c in cells:
        todo.put(c)
    threads_per_cell = max(1, (os.cpu_count() or 1) // workers)
    codes: dict[str, int] = {}
    running: dict[str, list] = {}        # cell id → [process, time it ended or None]
    stopping = threading.Event()
    slots = [None if process_per_cell else Workers(sweep.root / LOG_DIR, threads_per_cell, mps,
                                                   cells_per_gpu) for _ in range(workers)]

    def slot(own: Workers | None) -> None:
        while not stopping.is_set():
            try:
                cell = todo.get_nowait()
            except queue.Empty:
                if own is not None:
                    own.close()     # now, beside the other slots' workers, not one by one at the end
                return
            try:
                run_in_slot(cell, own)
            except Exception:   # noqa: BLE001 -- a launcher bug fails the cell, loudly; it
                # does not end the slot's thread and drop its cell from the run's summary
                log(f"{cell.id} {cell.name}: the launcher could not run it: "
                    f"{traceback.format_exc()}")
                codes[cell.id] = 1

    def run_in_slot(cell: Cell, own: Workers | None) -> None:
        if cancelled(sweep.cell_dir(cell.id)):   # before it waits for a GPU
            codes[cell.id] = skipped(cell, log)
            return
        need = needs.need_mb(cell) if needs and gpus_needed(cell) else 0.0
        lease = pool.take(gpus_needed(cell), own.gpus() if own else [], need) if gpus else None
        if lease and lease.memory_wait_s > 0:
            log(f"{cell.id} {cell.name}: waited {lease.memory_wait_s:.0f}s for GPU memory "
                f"(needs {need / 1024:.1f} GB on GPU {','.join(lease.gpus)})")
        try:
            if stopping.is_set():
                return
            started = time.time()
            code = run_one(sweep, cell, lease.gpus if lease else None, threads_per_cell, log,
                           running=running, workers=own, mps=mps, cells_per_gpu=cells_per_gpu)
            if stopping.is_set():
                return
            if code not in (0, INTERRUPTED, SKIPPED) and lease and oom.again(cell, lease, pool, started):
                queued_again(sweep.cell_dir(cell.id))
                running.pop(cell.id, None)
                todo.put(cell)
            else:
                codes[cell.id] = code
        finally:
            if lease:
                pool.give(lease)

    def close() -> None:
        for own in slots:
            if own is not None:
                own.close()

    threads = [threading.Thread(target=slot, args=(own,), daemon=True) for own in slots]
    with interrupt.interrupt_once():   # one KeyboardInterrupt, however many SIGINT/SIGTERMs come
        try:
            for t in threads:
                t.start()
            for t in threads:
                while t.is_alive():
                    t.join(0.2)      # short joins: Ctrl-C reaches this thread at once
            close()                  # in the try: Ctrl-C handled this late still counts
        except KeyboardInterrupt:
            stopping.set()
            stopped = set(interrupt.stop(sweep, running, since=time.time() - INTERRUPT_SLACK_S))
            stopped |= {c for c, code in codes.items() if code == INTERRUPTED}
            done = {c: code for c, code in codes.items() if c not in stopped}
            not_started = [c.id for c in cells if c.id not in done and c.id not in stopped]
            raise Interrupted(done, sorted(stopped), not_started) from None
        finally:
            close()
    return codes


def run_one(sweep: Sweep, cell: Cell, gpus: list[str] | None, threads: int, log,
            running: dict[str, list] | None = None, workers: Workers | None = None,
            mps: MpsDaemon | None = None, cells_per_gpu: int = 1) -> int:
    """Run one cell: in one of the slot's `workers` (a cell of at most one GPU), else in a
    process of its own. local.pid names the process that runs it, local.exit its exit code;
    returns that code, or INTERRUPTED if the process said Ctrl-C ended the cell (marked so)."""
    cell_dir = sweep.cell_dir(cell.id)
    started = time.time()
    if cancelled(cell_dir):   # checked again: the slot may have waited for a GPU
        return skipped(cell, log)
    (cell_dir / interrupt.MARK).unlink(missing_ok=True)
    (cell_dir / EXIT_FILE).unlink(missing_ok=True)
    out, err = cell_dir / "local.out", cell_dir / "local.err"
    if workers is not None and gpus_needed(cell) <= 1:
        worker = workers.get(gpus or [])   # a new worker's start takes seconds: look again
        if cancelled(cell_dir):
            return skipped(cell, log)
        _started(cell_dir, worker.proc, running, cell.id)
        code = worker.run(cell_dir, out, err)
    else:
        env = process_env(gpus or [], threads, mps, cells_per_gpu)
        with open(out, "w") as o, open(err, "w") as e:
            proc = subprocess.Popen([sys.executable, "-m", "jobs.train_cell", str(cell_dir)],
                                    stdout=o, stderr=e, env=env)
            _started(cell_dir, proc, running, cell.id)
            code = proc.wait()
    if running is not None:
        running[cell.id][1] = time.time()
    interrupted = interrupt.ended_by_interrupt(code, cell_dir)
    if interrupted:
        interrupt.mark(cell_dir)     # before local.exit: status never sees it FAILED meanwhile
    (cell_dir / EXIT_FILE).write_text(f"{code}\n")
    log(f"{cell.id} {cell.name}: {'interrupted, ' if interrupted else ''}exit {code} after "
        f"{time.time() - started:.1f}s" + (f" on GPU {','.join(gpus)}" if gpus else ""))
    return INTERRUPTED if interrupted else code


def skipped(cell: Cell, log) -> int:
    log(f"{cell.id} {cell.name}: cancelled before it started")
    return SKIPPED


def queued_again(cell_dir: Path) -> None:
    """Clear what a failed try left that says FAILED (its result, exit code and pid: status
    shows the cell PENDING again). Its epoch checkpoints stay: the next try continues from
    them; it rewrites local.out and local.err."""
    for name in ("result.json", EXIT_FILE, "local.pid"):
        (cell_dir / name).unlink(missing_ok=True)


def _started(cell_dir: Path, proc, running: dict[str, list] | None, cell_id: str) -> None:
    if running is not None:
        running[cell_id] = [proc, None]
    (cell_dir / "local.pid").write_text(str(proc.pid))


class LocalExecutor(Executor):
    name = "local"
    help = "run the cells on this machine"
    cancels = "local cell(s)"

    def submit(self, sweep: Sweep, cells: list[Cell]) -> None:
        try:
            gpus, _ = plan(cells, self.options.workers, self.options.cells_per_gpu)
            order.check(self.options.order)
            if self.options.mps and uses_gpus(gpus, cells):
                available()     # before anything is recorded: a missing binary fails here
        except (ValueError, MpsError) as e:
            raise ExecutorError(str(e)) from None
        for c in cells:   # queued again: an earlier `cancel` of the cell no longer holds
            (sweep.cell_dir(c.id) / CANCELLED).unlink(missing_ok=True)
        # launcher_pid: while this process lives, a cell not started yet is queued (PENDING)
        sweep.record_submissions([{"cell": c.id, "executor": self.name, "job_id": None,
                                   "launcher_pid": os.getpid(), "order": self.options.order}
                                  for c in cells])

    def wait(self, sweep: Sweep, cells: list[Cell]) -> int:
        print(f"running {len(cells)} cells locally → {sweep.root}", flush=True)
        queued, line = order.arrange(sweep, cells, self.options.order)
        print(line, flush=True)
        mps = None
        if self.options.mps:
            try:
                mps = start_mps(sweep, cells)
            except MpsError as e:
                print(f"error: {e}; no cell was started (`python -m launcher resume "
                      f"{sweep.root}` runs them)", file=sys.stderr)
                return 2
        oom = OomRetries(sweep)
        try:
            codes = run_cells(sweep, queued, self.options.workers,
                              cells_per_gpu=self.options.cells_per_gpu,
                              process_per_cell=self.options.process_per_cell, mps=mps, oom=oom,
                              gpu_memory_gb=self.options.gpu_memory_gb)
        except Interrupted as e:
            interrupt.absorb_late_signals()
            ok = sum(code == 0 for code in e.codes.values())
            gone = sum(code == SKIPPED for code in e.codes.values())
            ran = len(e.codes) - gone
            print(f"interrupted: {ran} finished ({ok} completed, {ran - ok} failed), "
                  f"{len(e.stopped)} interrupted, " + (f"{gone} cancelled, " if gone else "") +
                  f"{len(e.not_started)} not started; "
                  f"`python -m launcher resume {sweep.root}` runs the rest", file=sys.stderr)
            return INTERRUPTED
        finally:
            problem = mps.stop() if mps is not None else None
            if problem:
                print(f"warning: MPS: {problem}", file=sys.stderr)
        failed = [c for c, code in codes.items() if code not in (0, INTERRUPTED, SKIPPED)]
        stopped = [c for c, code in codes.items() if code == INTERRUPTED]
        gone = [c for c, code in codes.items() if code == SKIPPED]
        print(f"{len(codes) - len(failed) - len(stopped) - len(gone)} completed, "
              f"{len(failed)} failed" + oom.summary()
              + (f", {len(stopped)} interrupted" if stopped else "")
              + (f", {len(gone)} cancelled before they started" if gone else "")
              + (f" (`python -m launcher resume {sweep.root}` runs them)"
                 if stopped or gone else ""))
        return 1 if failed or stopped or gone else 0

    def scheduler_states(self, sweep: Sweep, submissions: dict[str, dict]
                         ) -> dict[str, SchedulerState]:
        return {cid: local_cells.state(sweep.cell_dir(cid), sub)
                for cid, sub in submissions.items()}

    def cancel(self, sweep: Sweep, submissions: dict[str, dict]) -> int:
        return local_cells.cancel(sweep, submissions)
