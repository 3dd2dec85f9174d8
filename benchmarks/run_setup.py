"""A run's setup as the trainer builds it (accelerator, model, optimiser, scheduler, training
windows, graph step), for the benchmarks that time the trainer's parts. The one place in
benchmarks/ that sets up a run: to follow the trainer's own setup function, change
`setup_run` alone."""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

from recsys_core.models import build_model
from recsys_core.train import fast_step
from recsys_core.train.evaluate import evaluate, user_loader
from recsys_core.train.loop import make_accelerator, seed_everything, train_epoch
from recsys_core.train.optim import make_optimizer, make_scheduler


class Run(NamedTuple):
    cfg: Any
    split: Any
    accelerator: Any
    model: Any
    optimizer: Any
    scheduler: Any       # None for scheduler "none" (the benchmarks' configurations)
    starts: Any
    ends: Any
    step: Any            # fast_step.TrainStep, or None where the trainer runs its eager loop

    def train(self, epoch: int) -> tuple[float, float, int]:
        """One training epoch as the trainer runs it: (loss, gradient norm, sequences); it
        returns after reading the loss on the host."""
        return train_epoch(self.cfg, self.model, self.optimizer, self.scheduler, self.split,
                           self.starts, self.ends, epoch, self.accelerator, self.step)

    def evaluator(self, batch_size: int) -> Callable[[], dict]:
        """The trainer's full-ranking validation of all users in batches of `batch_size`, as a
        call returning the metrics (it ends with host reads)."""
        loader = self.accelerator.prepare(user_loader(self.split.n_users, batch_size))
        return functools.partial(evaluate, self.model, self.split, "val", max_len=self.cfg.max_len,
                                 filter_seen=self.cfg.filter_seen, ks=self.cfg.ks, loader=loader,
                                 accelerator=self.accelerator)


def setup_run(cfg, data, split, fused_loss: bool = True) -> Run:
    """What `loop.run` builds for a trainable cell on `data` already loaded and `split` on the
    run's device (a benchmark sets up several runs on one dataset, loaded once);
    fused_loss=False: the graph step with the model's own loss."""
    acc = make_accelerator(cfg)
    seed_everything(cfg.seed)
    model = build_model(cfg.model, data.n_items, cfg, acc.device.type).to(acc.device)
    graphs = fast_step.graph_unsupported_reason(cfg, acc) is None
    optimizer = make_optimizer(cfg, model, cfg.lr, capturable=graphs)
    model, optimizer = acc.prepare(model, optimizer)
    starts, ends = split.train_windows(cfg.max_len, cfg.train_windows)
    scheduler = make_scheduler(cfg, optimizer, math.ceil(len(starts) / cfg.batch_size))
    step = fast_step.for_run(cfg, model, optimizer, acc, split, starts, ends,
                             fused_loss=fused_loss)
    return Run(cfg, split, acc, model, optimizer, scheduler, starts, ends, step)
