"""Checkpoints: one after every epoch (everything needed to continue bit-for-bit on CPU) and
the best model by validation metric. Written atomically; only the main process writes."""
from __future__ import annotations

import io
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from recsys_core.atomic import atomic_write

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


def save(out: Path, cfg, accelerator, model, optimizer, scheduler, state: TrainState) -> None:
    _save(Path(out) / CHECKPOINT, {
        "config_hash": cfg.hash(),
        "model": accelerator.unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "state": asdict(state),
        "rng": {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        },
    })


def resume(out: Path, cfg, accelerator, model, optimizer, scheduler) -> TrainState:
    """Load the last checkpoint in `out` if there is one (all processes), else a fresh state."""
    path = Path(out) / CHECKPOINT
    if not path.exists():
        return TrainState()
    saved = torch.load(path, map_location="cpu", weights_only=False)
    if saved["config_hash"] != cfg.hash():
        raise ValueError(f"{path}: made by a different configuration (hash "
                         f"{saved['config_hash']}, this run {cfg.hash()}); use another --out")
    accelerator.unwrap_model(model).load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    if scheduler is not None and saved["scheduler"] is not None:
        scheduler.load_state_dict(saved["scheduler"])
    rng = saved["rng"]
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return TrainState(**saved["state"])


def save_best(out: Path, model) -> None:
    _save(Path(out) / BEST, model.state_dict())


def load_best(out: Path, model, device) -> None:
    model.load_state_dict(torch.load(Path(out) / BEST, map_location="cpu"))  # copied onto the model's device
