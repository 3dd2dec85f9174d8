"""Checkpoints: the last epoch (everything needed to continue bit-for-bit on CPU) and the best
model by validation metric. Written atomically; only the main process writes.

`Writer` takes a snapshot after every epoch at once (every tensor copied to the CPU) and writes
the files in a background thread, at most every `checkpoint_every_s` seconds (the first epoch's
always). The last snapshot is written anyway when the run fails, is interrupted (Ctrl-C) or
preempted, stops or ends (`flush`), so such a run resumes from its last finished epoch; one
killed outright (SIGKILL, a node lost) from at most that many seconds before. Why not every
epoch: on short epochs the background write still slowed training. On the Amazon Beauty cell
on an H100, epochs took 0.54 instead of 0.51 s, and with the final wait that was about 1 s of
the cell's 15 (results/benchmarks/checkpoint_cost/). A write interrupted by a kill leaves the
previous file (atomic rename)."""
from __future__ import annotations

import contextlib
import io
import pickle
import random
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from recsys_core.atomic import atomic_write
from recsys_core.train.config import ConfigError

CHECKPOINT = "checkpoint.pt"
BEST = "best_model.pt"


@dataclass
class TrainState:
    """Where training stands: the epoch just finished and the early-stopping bookkeeping."""
    epoch: int = 0
    best_metric: float = float("-inf")
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped: bool = False
    stop_request: str | None = None     # why training was stopped from outside (train/stop.py)
    history: list = field(default_factory=list)

    def observe(self, epoch: int, metric: float, patience: int) -> None:
        self.epoch = epoch
        if metric > self.best_metric:
            self.best_metric, self.best_epoch, self.bad_epochs = metric, epoch, 0
        else:
            self.bad_epochs += 1
            self.stopped = self.bad_epochs >= patience


def _save(path: Path, obj) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))


def _snapshot(obj):
    """`obj` with every tensor copied to the CPU (a copy also of CPU tensors: training goes
    on changing the originals in place while the copy is written)."""
    if torch.is_tensor(obj):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_snapshot(v) for v in obj)
    return obj


_LIVE: "weakref.WeakSet[Writer]" = weakref.WeakSet()


def flush_all() -> None:
    """Every live writer's held snapshot written, and waited for: what SLURM's preemption
    signal does before the job is requeued (jobs/train_cell.TrainCell.checkpoint)."""
    for writer in list(_LIVE):
        writer.flush()
        writer.wait()


class Writer:
    """Checkpoint files written in the background, one at a time and in order, at most every
    `every_s` seconds (0: every epoch); what was held back is written by `flush()`. `wait()`
    (also raising a failed write's error) before reading files back or leaving; a new write
    first collects the errors of finished ones."""

    def __init__(self, every_s: float = 0.0):
        self.every_s = every_s
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._pending: list[Future] = []
        self._held: dict[Path, object] = {}     # file -> the latest snapshot not yet written
        self._last_write: float | None = None
        _LIVE.add(self)

    def save(self, out: Path, cfg, accelerator, model, optimizer, schedule,
             state: TrainState) -> None:
        self._held[Path(out) / CHECKPOINT] = _snapshot(
            checkpoint(cfg, accelerator, model, optimizer, schedule, state))
        if self._last_write is None or time.monotonic() - self._last_write >= self.every_s:
            self.flush()

    def save_best(self, out: Path, model) -> None:
        """Held until the next checkpoint is written: both files always come from one epoch's
        end (best first, so a checkpoint on disk never names a best epoch its file lacks)."""
        self._held[Path(out) / BEST] = _snapshot(model.state_dict())

    def flush(self) -> None:
        held, self._held = self._held, {}
        if not held:
            return
        for f in [f for f in self._pending if f.done()]:
            self._pending.remove(f)
            f.result()
        for path in sorted(held, key=lambda p: p.name != BEST):
            self._pending.append(self._pool.submit(_save, path, held[path]))
        self._last_write = time.monotonic()

    def wait(self) -> None:
        pending, self._pending = self._pending, []
        for f in pending:
            f.result()


def checkpoint(cfg, accelerator, model, optimizer, schedule, state: TrainState) -> dict:
    """What a checkpoint holds (tensors still where they live)."""
    return {
        "config_hash": cfg.hash(),
        "model": accelerator.unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": schedule.state_dict() if schedule is not None else None,
        "state": asdict(state),
        "rng": {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        },
    }


class OtherRunsFolder(ConfigError):
    """`out` holds a run of another configuration: nothing of it is to be overwritten (the
    run stops before it writes anything there)."""


# What torch.load raises for a file cut short or not a checkpoint (an OSError, say a file
# that cannot be opened, is not among them: that is not the file's fault).
UNREADABLE = (RuntimeError, EOFError, pickle.UnpicklingError)


def resume(out: Path, cfg, accelerator, model, optimizer, schedule
           ) -> tuple[TrainState, str | None]:
    """Load the last checkpoint in `out` if there is one (all processes), else a fresh state;
    and what became of a checkpoint that could not be read (None if none)."""
    path = Path(out) / CHECKPOINT
    if not path.exists():
        return TrainState(), None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except UNREADABLE as e:
        # A checkpoint cut short (a disk that filled up, a partial copy) cannot be resumed
        # from, and would fail every resume: it is kept aside and the run starts over. The
        # cut run's best weights are kept too: the new run's first epoch would replace them.
        aside = path.with_name(CHECKPOINT + ".unreadable")
        best_aside = path.with_name(BEST + ".before-restart")
        if accelerator.is_main_process:
            with contextlib.suppress(FileNotFoundError):
                path.replace(aside)
            with contextlib.suppress(FileNotFoundError):
                (Path(out) / BEST).replace(best_aside)
        return TrainState(), f"{path} could not be read ({_first_line(e)}); kept as " \
                             f"{aside.name} (the best weights so far as {best_aside.name}), " \
                             "training started over"
    if saved["config_hash"] != cfg.hash():
        raise OtherRunsFolder(f"{path}: made by a different configuration (hash "
                              f"{saved['config_hash']}, this run {cfg.hash()}); use another "
                              "--out")
    accelerator.unwrap_model(model).load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    if schedule is not None:
        schedule.load_state_dict(saved["scheduler"])
    rng = saved["rng"]
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return TrainState(**saved["state"]), None


def load_best(out: Path, model, device) -> None:
    path = Path(out) / BEST
    if not path.exists():   # e.g. a committed sweep: results travel, weights stay where trained
        raise FileNotFoundError(f"{path}: no best weights (a sweep brought back without its "
                                "weights: analyse the run where it trained, or train it again)")
    try:
        state = torch.load(path, map_location="cpu")    # copied onto the model's device
    except UNREADABLE as e:
        raise ValueError(f"{path}: the best weights cannot be read ({_first_line(e)})") from None
    model.load_state_dict(state)


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
