"""Optimisers and learning-rate schedules by name (the study used all of these).

On CUDA the optimiser is the fused (one-kernel) Adam/AdamW. When the training step is to be
captured in a CUDA graph (`capturable=True`), its step count and learning rate live on the
device as well: the graph reads the learning rate from a device tensor, so a schedule that
changes it (in place, `fill_`) takes effect at the next replay without re-capturing. On the
CPU nothing changes (plain torch Adam/AdamW, float learning rate).
"""
from __future__ import annotations

import torch


def make_optimizer(cfg, model, lr: float, capturable: bool = False) -> torch.optim.Optimizer:
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg.optimizer]
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    if device.type != "cuda":
        return cls(params, lr=lr, weight_decay=cfg.weight_decay)
    if capturable:
        return cls(params, lr=torch.tensor(float(lr), device=device), weight_decay=cfg.weight_decay,
                   fused=True, capturable=True)
    return cls(params, lr=lr, weight_decay=cfg.weight_decay, fused=True)


def lr_on_device(optimizer: torch.optim.Optimizer, device) -> None:
    """Make every param group's learning rate a float32 0-dim tensor on `device`, as a captured
    step needs (a resumed checkpoint brings a float, or a tensor loaded onto the CPU). The
    tensor object is replaced only when it must be: the capture reads its address."""
    for group in optimizer.param_groups:
        lr = group["lr"]
        if not (isinstance(lr, torch.Tensor) and lr.device == torch.device(device)
                and lr.dtype == torch.float32 and lr.dim() == 0):
            group["lr"] = torch.tensor(float(lr), dtype=torch.float32, device=device)


def current_lr(optimizer) -> float:
    """The first param group's learning rate as a float (one read; a device tensor syncs)."""
    return float(optimizer.param_groups[0]["lr"])


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
    # max_lr as a float: OneCycle then computes every step's rate on the host and writes it
    # into a device learning rate with one fill_ (no read back, no sync per batch).
    return s.OneCycleLR(optimizer, max_lr=current_lr(optimizer),
                        total_steps=max(cfg.epochs * steps_per_epoch, 1))


def set_lr(optimizer, lr: float) -> None:
    """Every param group's learning rate; a device tensor is filled in place (a captured step
    reads its address)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


class Schedule:
    """The learning-rate schedule and the one place it is stepped: after every batch
    (OneCycle, which refuses to step past its end; a warm-up's steps) or after every epoch
    (StepLR and cosine; plateau on the validation metric). `none`: nothing to step.
    Warm-up (`warmup_steps` W): step i of the first W runs at lr × (i + 1) / W."""

    def __init__(self, cfg, optimizer, steps_per_epoch: int):
        self.kind = cfg.scheduler
        self.optimizer = optimizer
        self.warmup_steps, self.steps_done = cfg.warmup_steps, 0
        self.base_lr = current_lr(optimizer)
        self.scheduler = make_scheduler(cfg, optimizer, steps_per_epoch)
        if self.warmup_steps:
            set_lr(optimizer, self.base_lr / self.warmup_steps)

    @property
    def per_batch(self) -> bool:
        return self.kind == "onecycle" or self.steps_done < self.warmup_steps

    def after_batch(self) -> None:
        if self.steps_done < self.warmup_steps:
            self.steps_done += 1
            set_lr(self.optimizer,
                   self.base_lr * min(self.steps_done + 1, self.warmup_steps) / self.warmup_steps)
            return
        s = self.scheduler
        if self.kind == "onecycle" and s.last_epoch + 1 < s.total_steps:
            s.step()

    def after_epoch(self, val_metric: float) -> None:
        if self.kind == "plateau":
            self.scheduler.step(val_metric)
        elif self.kind in ("step", "cosine"):
            self.scheduler.step()

    def state_dict(self) -> dict | None:
        state = self.scheduler.state_dict() if self.scheduler is not None else None
        if not self.warmup_steps:
            return state    # as checkpoints were before warm-up existed
        return {"warmup": {"steps_done": self.steps_done, "base_lr": self.base_lr},
                "scheduler": state}

    def load_state_dict(self, state: dict | None) -> None:
        if isinstance(state, dict) and "warmup" in state:
            self.steps_done = state["warmup"]["steps_done"]
            self.base_lr = state["warmup"]["base_lr"]
            state = state["scheduler"]
        if self.scheduler is not None and state is not None:
            self.scheduler.load_state_dict(state)
