"""The two counts behind a full-ranking rank, per row of a [B, V] score block, in one Triton
pass on the GPU: candidates scoring at least the target's score, and NaN candidates.

In torch each count is a comparison that writes a [B, V] bool and a sum that first copies it
to int64: on the Amazon Beauty cell's validation (4,096 users × 54,543 items a batch, H100)
those copies and sums were 38 of its 71 ms of kernels (results/benchmarks/rank_counts/
README.md). This kernel reads the block once (one program per row) and writes two numbers a
row. The comparison is made in fp32 on values of the block's own dtype, as torch's is, so the
counts are the same. `metrics.ranks` uses it on CUDA; on the CPU it runs only under Triton's
interpreter (TRITON_INTERPRET=1), as the tests run it against torch's counts.
"""
from __future__ import annotations

import functools

import torch

from recsys_core.kernel_device import kernels_run_on, load_on_device, wait_for_compiles

BLOCK = 1024


@functools.cache
def _kernel():
    """The Triton kernel, defined on first use (a CPU install needs no triton)."""
    import triton
    import triton.language as tl

    @triton.jit
    def counts(scores_ptr, target_ptr, beats_ptr, nans_ptr, stride, hi, BLOCK: tl.constexpr):
        # columns 1 .. hi-1 (column 0 is padding); NaN >= x is false, as in torch
        row = tl.program_id(0).to(tl.int64)
        base = scores_ptr + row * stride
        t = tl.load(base + tl.load(target_ptr + row)).to(tl.float32)
        beats = tl.zeros([BLOCK], dtype=tl.int32)
        nans = tl.zeros([BLOCK], dtype=tl.int32)
        for off in range(1, hi, BLOCK):
            cols = off + tl.arange(0, BLOCK)
            inside = cols < hi
            x = tl.load(base + cols, mask=inside, other=0.0).to(tl.float32)
            beats += (inside & (x >= t)).to(tl.int32)
            nans += (inside & (x != x)).to(tl.int32)
        tl.store(beats_ptr + row, tl.sum(beats, 0).to(tl.int64))
        tl.store(nans_ptr + row, tl.sum(nans, 0).to(tl.int64))

    return counts


def kernel_fits(scores: torch.Tensor) -> bool:
    """CUDA (or the interpreter), rows of unit stride, triton importable."""
    if scores.dim() != 2 or scores.stride(1) != 1:
        return False
    if not kernels_run_on(scores.device.type):
        return False
    import importlib.util
    return importlib.util.find_spec("triton") is not None


def rank_counts(scores: torch.Tensor, targets: torch.Tensor,
                hi: int) -> tuple[torch.Tensor, torch.Tensor]:
    """([B] candidates among columns 1..hi-1 scoring >= the row's target, [B] NaNs among
    them), both int64: `(scores[:, 1:hi] >= target_score).sum(1)` and
    `isnan(scores[:, 1:hi]).sum(1)` in one pass."""
    b = scores.shape[0]
    beats = torch.empty(b, dtype=torch.long, device=scores.device)
    nans = torch.empty(b, dtype=torch.long, device=scores.device)
    if b:
        wait_for_compiles(PRECOMPILE_JOB)
        args, options = _counts_args(scores, targets.contiguous(), beats, nans,
                                     scores.stride(0), hi)
        _kernel()[(b,)](*args, **options)
    return beats, nans


def _counts_args(scores, targets, beats, nans, stride: int, hi: int):
    """The kernel's arguments and options; tensors or, for `precompile`, their dtypes."""
    return (scores, targets, beats, nans, stride, hi), {"BLOCK": BLOCK, "num_warps": 4}


PRECOMPILE_JOB = "rank_counts"     # its job's name in kernel_device.BackgroundCompile


def precompile(width: int, hi: int, dtype: torch.dtype, targets_dtype: torch.dtype) -> None:
    """Compile and load on the current CUDA device the kernel `rank_counts` will launch on
    [B, width] contiguous scores of `dtype` with `hi` and targets of `targets_dtype`
    (kernel_device.BackgroundCompile runs it during setup; the same specialisation, as
    fused_ce.precompile says)."""
    args, options = _counts_args(dtype, targets_dtype, torch.long, torch.long, width, hi)
    load_on_device(_kernel().warmup(*args, grid=(1,), **options))
