"""Which of torch's attention kernels the Transformers (SASRec, BERT4Rec, SASMamba) run on CUDA.

torch's first choice for masked attention on an H100 is cuDNN's. cuDNN builds a graph for every
new shape it meets: 0.2 s each on an H100, against 0.03 s for the first call of the
memory-efficient kernels, which are compiled into torch (results/benchmarks/attention_kernels/).
A cell meets many shapes: the training batch, the evaluation's full batches and its last one,
the last query alone, the cold-start users. On the Amazon Beauty cell those builds were about
1 s of its 18. `efficient` (the default) leaves cuDNN's kernels out, and torch picks among the
rest as it would (flash where there is no mask, memory-efficient, math).
`RECSYS_ATTENTION_KERNELS=torch` keeps torch's own choice.
The setting is process-wide (torch's flag), set when a run's model is built: every cell of a
worker runs the same way.
"""
from __future__ import annotations

import os

import torch
from torch import nn

KERNELS_ENV = "RECSYS_ATTENTION_KERNELS"
KERNELS = ("efficient", "torch")


def has_attention(model: nn.Module) -> bool:
    return any(isinstance(m, nn.MultiheadAttention) for m in model.modules())


def choose_attention_kernels(model: nn.Module, device_type: str) -> str | None:
    """Set torch's cuDNN-attention flag for `model` on `device_type` and return what runs
    (`efficient` or `torch`), or None where there is no attention on CUDA to choose for."""
    choice = os.environ.get(KERNELS_ENV) or KERNELS[0]
    if choice not in KERNELS:
        raise ValueError(f"{KERNELS_ENV}={choice!r}; valid: {', '.join(KERNELS)}")
    if device_type != "cuda" or not has_attention(model):
        return None
    torch.backends.cuda.enable_cudnn_sdp(choice == "torch")
    return choice
