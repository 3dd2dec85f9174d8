"""Optimisers and learning-rate schedules by name (the study used all of these)."""
from __future__ import annotations

import torch


def make_optimizer(cfg, model, lr: float) -> torch.optim.Optimizer:
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg.optimizer]
    return cls(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)


def make_scheduler(cfg, optimizer, steps_per_epoch: int):
    """StepLR and cosine step per epoch, plateau per epoch on the validation metric,
    OneCycle per batch; none = constant learning rate."""
    s = torch.optim.lr_scheduler
    if cfg.scheduler == "none":
        return None
    if cfg.scheduler == "step":
        return s.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.scheduler == "cosine":
        return s.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if cfg.scheduler == "plateau":
        return s.ReduceLROnPlateau(optimizer, mode="max", factor=cfg.gamma, patience=1)
    return s.OneCycleLR(optimizer, max_lr=optimizer.param_groups[0]["lr"],
                        total_steps=max(cfg.epochs * steps_per_epoch, 1))


def step_scheduler(scheduler) -> None:
    if scheduler.last_epoch + 1 < scheduler.total_steps:   # OneCycle refuses to step past its end
        scheduler.step()
