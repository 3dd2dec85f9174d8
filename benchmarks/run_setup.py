"""The benchmarks' runs, set up exactly as the trainer sets up its own (recsys_core.train.setup.
build_run), on data loaded once per dataset; and the trainer's epoch and evaluation as calls
to time."""
from __future__ import annotations

import functools
from typing import Callable

from recsys_core.train.evaluate import evaluate, user_loader
from recsys_core.train.loop import train_epoch
from recsys_core.train.setup import Run, build_run

__all__ = ["Run", "evaluator", "setup_run", "train"]


def setup_run(cfg, data, split, fused_loss: bool = True) -> Run:
    """The trainer's run for `cfg` on `data` and `split` already on the run's device;
    fused_loss=False: the graph step with the model's own loss."""
    return build_run(cfg, data=data, split=split, fused_loss=fused_loss)


def train(run: Run, epoch: int) -> tuple[float, float, int]:
    """One training epoch as the trainer runs it: (loss, gradient norm, sequences); it returns
    after reading the loss on the host."""
    return train_epoch(run, epoch)


def evaluator(run: Run, batch_size: int) -> Callable[[], dict]:
    """The trainer's full-ranking validation of all users in batches of `batch_size`, as a call
    returning the metrics (it ends with host reads)."""
    loader = user_loader(run.split.n_users, batch_size, run.accelerator)
    return functools.partial(evaluate, run.model, run.split, "val", max_len=run.cfg.max_len,
                             filter_seen=run.cfg.filter_seen, ks=run.cfg.ks, loader=loader,
                             accelerator=run.accelerator)
