"""The pieces the state-space recommenders (mamba4rec.py, sasmamba.py) share: the Mamba layer
(Gu & Dao, 2023) from one of three backends, evaluation in row chunks (mambapy's memory), and
the position-wise feed-forward.

Backends, the first that applies: `mamba_ssm` (the authors' CUDA kernels; optional, not a
dependency) where it imports and the model runs on CUDA; `triton` (mambapy's layer with the
selective scan of selective_scan.py: Triton kernels, sequential over time with the state in
registers) where triton imports and the model runs on CUDA; else `mambapy` (pure PyTorch, a
parallel scan; a dependency, runs anywhere). RECSYS_MAMBA_BACKEND in the environment names one
instead (benchmarks comparing them; the tests run `triton` on the CPU under Triton's
interpreter). All take the same arguments (d_model, d_state, d_conv, expand; dt_rank
ceil(D/16)), initialise alike (S4D-real A, Δ bias with softplus(Δ) in [0.001, 0.1]) and name
their parameters alike (in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj), so a
checkpoint of one loads into another. The model records the backend it was built with
(`mamba_backend`; the trainer writes it into result.json).
"""
from __future__ import annotations

import importlib
import os

import torch
from torch import nn

BACKENDS = ("mamba_ssm", "triton", "mambapy")
BACKEND_ENV = "RECSYS_MAMBA_BACKEND"


def _imports(module: str) -> bool:
    try:
        importlib.import_module(module)
    except (ImportError, OSError):    # not installed, or built for another torch/CUDA
        return False
    return True


def mamba_backend(device_type: str) -> str:
    """RECSYS_MAMBA_BACKEND where set; else on CUDA `mamba_ssm` where it imports, then
    `triton` where it imports; else `mambapy`."""
    forced = os.environ.get(BACKEND_ENV)
    if forced:
        if forced not in BACKENDS:
            raise ValueError(f"{BACKEND_ENV}={forced!r}; valid: {', '.join(BACKENDS)}")
        return forced
    if device_type != "cuda":
        return "mambapy"
    for backend in ("mamba_ssm", "triton"):
        if _imports(backend):
            return backend
    return "mambapy"


def mamba_layer(d_model: int, d_state: int, d_conv: int, expand: int,
                backend: str = "mambapy") -> nn.Module:
    """One Mamba mixer: [B, L, D] -> [B, L, D], causal (no norm, no residual around it)."""
    if backend == "mamba_ssm":
        from mamba_ssm import Mamba
        return Mamba(d_model=d_model, d_state=d_state, d_conv=d_conv, expand=expand)
    if backend not in BACKENDS:
        raise ValueError(f"mamba backend {backend!r}; valid: {', '.join(BACKENDS)}")
    from mambapy.mamba import MambaConfig
    if backend == "triton":
        from recsys_core.models.selective_scan import TritonMambaBlock as Block
    else:
        from mambapy.mamba import MambaBlock as Block
    return Block(MambaConfig(d_model=d_model, n_layers=1, d_state=d_state, d_conv=d_conv,
                             expand_factor=expand))


class ChunkedScoring:
    """A SequentialModel mixin: `score_next` over row chunks where mambapy runs. Its scan keeps
    about five [rows, L', expand·D, d_state] fp32 tensors at once (L' = L rounded up to a power
    of two): all 6,040 ML-1M users at L 200, D 64 would need ~125 GB. Chunks keep each under
    SCAN_ELEMENTS. The other backends keep no such tensor without a gradient (triton's scan
    writes its states only for the backward), so they score all rows at once: [rows, L,
    expand·D] activations. Training batches are the trainer's to size."""

    SCAN_ELEMENTS = 2 ** 28      # 1 GiB of fp32
    mamba_backend: str
    scan_width: int              # expand·D·d_state

    def score_next(self, history: torch.Tensor) -> torch.Tensor:
        score = super().score_next
        padded = 1 << (history.shape[1] - 1).bit_length()
        rows = max(1, self.SCAN_ELEMENTS // (padded * self.scan_width))
        if self.mamba_backend != "mambapy" or len(history) <= rows:
            return score(history)
        return torch.cat([score(part) for part in history.split(rows)])


class FeedForward(nn.Module):
    """Mamba4Rec's position-wise feed-forward: LN(x + dropout(W2 dropout(GELU(W1 x)))), inner
    width ffn_factor x D (4 x D in Mamba4Rec), LayerNorm eps 1e-12 as there."""

    def __init__(self, dim: int, ffn_factor: int, dropout: float):
        super().__init__()
        self.ffn = nn.Sequential(nn.Linear(dim, dim * ffn_factor), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(dim * ffn_factor, dim), nn.Dropout(dropout))
        self.norm = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.ffn(x))
