"""Which training step a run gets: the fixed-shape step (train_step.TrainStep) as a CUDA graph,
the same step run eagerly (several GPUs whose capture is not selected or not possible), or
loop.train_epoch's eager loop (CPU, `cuda_graphs: false`, fault injection). setup.build_run
asks once, for the optimiser (capturable where a graph runs), the model's wrapper (none where
the fixed-shape step averages the gradients itself) and the step."""
from __future__ import annotations

import os

import torch

from recsys_core.train.graph_capture import nccl_capture_unsupported_reason
from recsys_core.train.hooks import DebugHooks
from recsys_core.train.train_step import TrainStep


def graph_unsupported_reason(cfg, accelerator, hooks: DebugHooks = DebugHooks()) -> str | None:
    """None when the training step can be captured in a CUDA graph, else why not."""
    if not getattr(cfg, "cuda_graphs", False):
        return "cuda_graphs=false"
    if accelerator.device.type != "cuda":
        return f"device is {accelerator.device.type}, not cuda"
    if accelerator.num_processes != 1:
        if not getattr(cfg, "multi_gpu_graph", False):
            return f"{accelerator.num_processes} processes and multi_gpu_graph=false"
        why = nccl_capture_unsupported_reason(torch.distributed.get_backend(),
                                              torch.cuda.nccl.version(), os.environ)
        if why:
            return why
    if hooks.inject_fault:
        return "inject_fault is set (the fault paths run eagerly)"
    if getattr(accelerator, "gradient_accumulation_steps", 1) != 1:
        return "gradient accumulation"
    return None


def step_kind(cfg, accelerator, hooks: DebugHooks = DebugHooks()) -> str | None:
    """"graph" (the fixed-shape step, captured), "eager" (the same step without a graph: several
    GPUs whose capture is not selected or not possible) or None (loop.train_epoch's eager loop:
    CPU, `cuda_graphs: false`, fault injection)."""
    if graph_unsupported_reason(cfg, accelerator, hooks) is None:
        return "graph"
    if (accelerator.num_processes > 1 and accelerator.device.type == "cuda"
            and cfg.cuda_graphs and not hooks.inject_fault):
        return "eager"
    return None


def build_train_step(cfg, hooks, model, optimizer, accelerator, split, starts, ends,
                     fused_loss: bool = True) -> TrainStep | None:
    """The trainer's fixed-shape step, or None where the eager loop must run (`step_kind`). A
    capture that fails later leaves `fallback_reason` set and the step runs its body eagerly,
    which trains identically; so does a multi-GPU graph asked for but not possible here."""
    kind = step_kind(cfg, accelerator, hooks)
    if kind is None:
        return None
    step = TrainStep(cfg, model, optimizer, accelerator, split, starts, ends,
                     use_graph=kind == "graph", fused_loss=fused_loss)
    if kind == "eager" and cfg.multi_gpu_graph:
        step.fallback_reason = graph_unsupported_reason(cfg, accelerator, hooks)
    return step

