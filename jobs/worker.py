"""Many cells, one after another, in one process: the imports, the CUDA context, compiled
kernels (Triton's, Inductor's) and the prepared dataset tensors (recsys_core/train/prepared.py)
are paid for once instead of once per cell. Each cell still goes through `train_cell.train`
and writes its own result files, checkpoints and W&B run; one that fails (an exception, an
injected fault) is recorded FAILED and the next cell runs.

Two ways in:
- `Worker.run(cell_dir)`, in this process: a SLURM pack (jobs/pack.py) runs its cells so;
- `python -m jobs.worker [--spare]`: the local executor's persistent worker. It reads one JSON request
  a line on stdin, `{"cell": DIR, "out": FILE, "err": FILE, "sent": EPOCH_S}`, runs the cell
  with its stdout and stderr (the file descriptors, so C libraries' output too) in those files,
  and answers `{"cell": DIR, "code": 0 or 1}` on a line of its own stdout; EOF ends it.
  Ctrl-C (SIGINT) ends it: a cell it was running is answered with code 130 (interrupted, not
  failed: the launcher marks it so and `resume` runs it again), then it exits 130 quietly.
  A spare (`--spare`, started by the launcher before it read its grid: launcher/spare_worker.py)
  first gets `{"env": {...}, "log": FILE}`: the environment and log it is taken with.
"""
from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
import threading
import time
import traceback

from jobs.timing import process_start, slurm_queue_s
from jobs.train_cell import train
from recsys_core.cli import INTERRUPTED, guarded


class Worker:
    def __init__(self, runner: str):
        from recsys_core.train.prepared import Prepared
        self.runner = runner                 # "worker" (local) or "pack" (SLURM)
        self.prepared = Prepared()
        self.started = process_start()
        self.queue_s = slurm_queue_s()
        self.cells_run = 0

    def run(self, cell_dir: str, handed_at: float | None = None) -> bool:
        """Train one cell here; True if it completed. Never raises for a failing cell (its
        error goes to stderr and, from the trainer, into its result file)."""
        since = max(self.started, handed_at or 0.0)
        job = {"runner": self.runner, "runner_cells_before": self.cells_run,
               "time_queue_s": self.queue_s}
        try:
            train(cell_dir, since=since, job=job, prepared=self.prepared)
            return True
        except Exception:  # noqa: BLE001 -- one cell's failure is not the worker's
            traceback.print_exc()
            return False
        finally:
            self.cells_run += 1
            between_cells()


def between_cells() -> None:
    """Leave nothing of one cell to the next, a failed one's too: a W&B run still open (a
    finish that timed out), torch.compile's guards and code for the last cell's modules (each
    cell compiles its own; Inductor's kernel caches stay), garbage holding device memory (a
    failed cell's traceback is gone by now), and the allocator's cached blocks (other workers
    share the GPU: after an out-of-memory error, above all)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        closing = threading.Thread(target=wandb.run.finish, kwargs={"exit_code": 1},
                                   daemon=True)
        closing.start()
        closing.join(30)
    dynamo = sys.modules.get("torch._dynamo")
    if dynamo is not None:
        dynamo.reset()
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()    # the last cell's cached blocks, back to the cells beside it


@contextlib.contextmanager
def output_to(out: str, err: str):
    """This process's stdout and stderr (file descriptors 1 and 2) into two files."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(out, "w") as o, open(err, "w") as e:
        os.dup2(o.fileno(), 1)
        os.dup2(e.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def serve(requests, replies) -> int:
    worker = Worker("worker")
    import recsys_core.train.loop  # noqa: F401 -- the training stack, before the first cell
    for line in requests:
        if not line.strip():
            continue
        req = json.loads(line)
        if "env" in req:
            taken(req["env"], req["log"])
            continue
        try:
            with output_to(req["out"], req["err"]):
                ok = worker.run(req["cell"], handed_at=req.get("sent"))
        except KeyboardInterrupt:
            reply(replies, req["cell"], INTERRUPTED)    # before this worker ends with it
            raise
        reply(replies, req["cell"], 0 if ok else 1)
    return 0


def taken(env: dict[str, str], log: str) -> None:
    """A spare (launcher/spare_worker.py), taken: from now on it has the environment and the
    log a worker started for these cells has. Its CUDA_VISIBLE_DEVICES was already this."""
    os.environ.clear()
    os.environ.update(env)
    import torch
    torch.set_num_threads(int(env["OMP_NUM_THREADS"]))   # OpenMP read it at torch's import
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    print(f"worker {os.getpid()}: the spare started with the launcher, taken for "
          f"CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES')!r}", file=sys.stderr, flush=True)


def reply(replies, cell: str, code: int) -> None:
    replies.write(json.dumps({"cell": cell, "code": code}) + "\n")
    replies.flush()


def main(argv: list[str]) -> int:
    if "--spare" in argv:
        # Started before the launcher knew its sweep (whose folder keeps the cells' bytecode
        # where the stack has none): the launcher's own bytecode folder instead.
        from recsys_core.bytecode import LAUNCHER_CACHE, bytecode_cache
        bytecode_cache(LAUNCHER_CACHE, children=False)
    # The replies get the original stdout; fd 1 itself goes to each cell's log in turn.
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    started = time.time()
    try:
        return serve(sys.stdin, replies)
    finally:
        print(f"worker {os.getpid()}: done after {time.time() - started:.1f} s",
              file=sys.stderr)


if __name__ == "__main__":
    from recsys_core.cli import exit_cli
    exit_cli(guarded(lambda _argv: main(sys.argv[1:])))
