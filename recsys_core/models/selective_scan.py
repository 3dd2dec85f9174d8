"""The Mamba layers' selective scan in Triton (models/ssm.py's `triton` backend): what mambapy's
`MambaBlock.selective_scan(x, delta, A, B, C, D)` computes,

    h_t = exp(Δ_t A) ⊙ h_{t-1} + (Δ_t x_t) B_t,    y_t = h_t C_t + D ⊙ x_t    (h_0 = 0),

x, Δ [rows, L, ED], A [ED, N], B, C [rows, L, N], D [ED] → y [rows, L, ED], without mambapy's
[rows, L', ED, N] intermediates and parallel scan. One program per (row, block of ED channels)
walks the sequence with its [block, N] state in registers, in fp32 whatever the inputs' dtype
(mambapy under bf16 autocast contracts h with C in bf16; this does not). Where a gradient is
needed the forward also writes the states h ([rows, L, ED, N] fp32: 420 MB at the ML-1M
training shape, ED 128, N 32, batch 128) and the backward runs the recurrence in reverse:

    g_t  = exp(Δ_{t+1} A) ⊙ g_{t+1} + dy_t C_t                       (dLoss/dh_t)
    dx_t = Δ_t Σ_n g_t B_t + D dy_t
    dΔ_t = Σ_n g_t ⊙ (A exp(Δ_t A) ⊙ h_{t-1}) + x_t Σ_n g_t B_t
    dA   = Σ_rows,t Δ_t g_t ⊙ exp(Δ_t A) ⊙ h_{t-1}      dD = Σ_rows,t dy_t x_t
    dB_t = Σ_e Δ_t x_t g_t                              dC_t = Σ_e dy_t h_t

The sums over ED blocks (dB, dC) and over rows (dA, dD) are per-program partial sums added in
torch (deterministic; no atomics). Without a gradient (evaluation) no state is written.

On the CPU the kernels run only under Triton's interpreter (TRITON_INTERPRET=1 in the
environment before this module is imported): the tests compare it with mambapy there.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from mambapy.mamba import MambaBlock

from recsys_core.kernel_device import kernels_run_on


@triton.jit
def _scan_fwd(x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, y_ptr, h_ptr, L, ED, N,
              sxb, sxl, sxe, sdb, sdl, sde, sBb, sBl, sBn, sCb, sCl, sCn, sAe, sAn, sD,
              BLOCK_E: tl.constexpr, BLOCK_N: tl.constexpr, STORE_H: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    e = tl.program_id(1) * BLOCK_E + tl.arange(0, BLOCK_E)
    n = tl.arange(0, BLOCK_N)
    em, nm = e < ED, n < N
    m2 = em[:, None] & nm[None, :]
    A = tl.load(A_ptr + e[:, None] * sAe + n[None, :] * sAn, mask=m2, other=0.0).to(tl.float32)
    Dv = tl.load(D_ptr + e * sD, mask=em, other=0.0).to(tl.float32)
    h = tl.zeros([BLOCK_E, BLOCK_N], dtype=tl.float32)
    for t in range(L):
        x = tl.load(x_ptr + b * sxb + t * sxl + e * sxe, mask=em, other=0.0).to(tl.float32)
        dt = tl.load(dt_ptr + b * sdb + t * sdl + e * sde, mask=em, other=0.0).to(tl.float32)
        Bt = tl.load(B_ptr + b * sBb + t * sBl + n * sBn, mask=nm, other=0.0).to(tl.float32)
        Ct = tl.load(C_ptr + b * sCb + t * sCl + n * sCn, mask=nm, other=0.0).to(tl.float32)
        # (Δ B) x in mambapy's order of products
        h = tl.exp(dt[:, None] * A) * h + dt[:, None] * Bt[None, :] * x[:, None]
        y = tl.sum(h * Ct[None, :], axis=1) + Dv * x
        row = (b * L + t) * ED + e                           # y, h: contiguous
        tl.store(y_ptr + row, y, mask=em)
        if STORE_H:
            tl.store(h_ptr + row[:, None] * N + n[None, :], h, mask=m2)


@triton.jit
def _scan_bwd(x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, h_ptr, dy_ptr,
              dx_ptr, ddt_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, L, ED, N,
              sxb, sxl, sxe, sdb, sdl, sde, sBb, sBl, sBn, sCb, sCl, sCn, sAe, sAn, sD,
              syb, syl, sye, BLOCK_E: tl.constexpr, BLOCK_N: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    eb = tl.program_id(1)
    e = eb * BLOCK_E + tl.arange(0, BLOCK_E)
    n = tl.arange(0, BLOCK_N)
    em, nm = e < ED, n < N
    m2 = em[:, None] & nm[None, :]
    A = tl.load(A_ptr + e[:, None] * sAe + n[None, :] * sAn, mask=m2, other=0.0).to(tl.float32)
    Dv = tl.load(D_ptr + e * sD, mask=em, other=0.0).to(tl.float32)
    g = tl.zeros([BLOCK_E, BLOCK_N], dtype=tl.float32)        # dLoss/dh_t
    decay_next = tl.zeros([BLOCK_E, BLOCK_N], dtype=tl.float32)  # exp(Δ_{t+1} A); 0 past the end
    dA = tl.zeros([BLOCK_E, BLOCK_N], dtype=tl.float32)
    dD = tl.zeros([BLOCK_E], dtype=tl.float32)
    h_t = tl.load(h_ptr + ((b * L + L - 1) * ED + e[:, None]) * N + n[None, :], mask=m2, other=0.0)
    partial = (b * tl.num_programs(1) + eb) * L              # dB, dC partials: [rows, blocks, L, N]
    for i in range(L):
        t = L - 1 - i
        x = tl.load(x_ptr + b * sxb + t * sxl + e * sxe, mask=em, other=0.0).to(tl.float32)
        dt = tl.load(dt_ptr + b * sdb + t * sdl + e * sde, mask=em, other=0.0).to(tl.float32)
        Bt = tl.load(B_ptr + b * sBb + t * sBl + n * sBn, mask=nm, other=0.0).to(tl.float32)
        Ct = tl.load(C_ptr + b * sCb + t * sCl + n * sCn, mask=nm, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + b * syb + t * syl + e * sye, mask=em, other=0.0).to(tl.float32)
        h_prev = tl.load(h_ptr + ((b * L + t - 1) * ED + e[:, None]) * N + n[None, :],
                         mask=m2 & (tl.full([BLOCK_E, BLOCK_N], t, tl.int32) > 0), other=0.0)
        g = decay_next * g + dy[:, None] * Ct[None, :]
        decay = tl.exp(dt[:, None] * A)
        g_decay = g * decay * h_prev                          # dLoss/d(Δ_t A)
        dA += g_decay * dt[:, None]
        gB = tl.sum(g * Bt[None, :], axis=1)
        row = (b * L + t) * ED + e                            # dx, dΔ: contiguous
        tl.store(dx_ptr + row, gB * dt + dy * Dv, mask=em)
        tl.store(ddt_ptr + row, tl.sum(g_decay * A, axis=1) + gB * x, mask=em)
        tl.store(dB_ptr + (partial + t) * N + n, tl.sum(g * (dt * x)[:, None], axis=0), mask=nm)
        tl.store(dC_ptr + (partial + t) * N + n, tl.sum(h_t * dy[:, None], axis=0), mask=nm)
        dD += dy * x
        decay_next = decay
        h_t = h_prev
    tl.store(dA_ptr + (b * ED + e[:, None]) * N + n[None, :], dA, mask=m2)
    tl.store(dD_ptr + b * ED + e, dD, mask=em)


def _launch(x: torch.Tensor, A: torch.Tensor, block_e: int | None) -> dict:
    """Grid and block sizes: blocks of ED (≤ 32 channels: B·ED/32 programs, several per SM
    at the study's batch 128), the state's N padded to a power of two."""
    ED, N = A.shape
    block_e = block_e or min(32, triton.next_power_of_2(ED))
    block_n = triton.next_power_of_2(N)
    return dict(grid=(x.shape[0], triton.cdiv(ED, block_e)), BLOCK_E=block_e, BLOCK_N=block_n,
                num_warps=max(1, min(8, block_e * block_n // 256)))


def _strides(*tensors: torch.Tensor) -> list[int]:
    return [s for t in tensors for s in t.stride()]


def _check(x, delta, A, B, C, D) -> None:
    rows, L, ED = x.shape
    N = A.shape[-1]
    expected = {"x": (rows, L, ED), "delta": (rows, L, ED), "A": (ED, N), "B": (rows, L, N),
                "C": (rows, L, N), "D": (ED,)}
    for name, t in zip(expected, (x, delta, A, B, C, D)):
        if tuple(t.shape) != expected[name]:
            raise ValueError(f"selective_scan: {name} has shape {tuple(t.shape)}, expected "
                             f"{expected[name]} (x [rows, L, ED], A [ED, N])")
    if not kernels_run_on(x.device.type):
        raise RuntimeError("the triton selective scan runs on CUDA tensors, or on the CPU under "
                           "Triton's interpreter (TRITON_INTERPRET=1 before importing it); "
                           f"got tensors on {x.device}")


def _forward(x, delta, A, B, C, D, block_e: int | None, store_states: bool):
    rows, L, ED = x.shape
    N = A.shape[1]
    launch = _launch(x, A, block_e)
    y = torch.empty(rows, L, ED, device=x.device, dtype=torch.float32)
    h = torch.empty(rows, L, ED, N, device=x.device, dtype=torch.float32) if store_states else y
    _scan_fwd[launch.pop("grid")](x, delta, A, B, C, D, y, h, L, ED, N,
                                  *_strides(x, delta, B, C, A, D), STORE_H=store_states, **launch)
    # mambapy's result dtype: fp32 in the Mamba layers (A and D are fp32), under autocast too
    return y.to(functools.reduce(torch.promote_types, (t.dtype for t in (x, delta, A, B, C, D)))), h


class SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, delta, A, B, C, D, block_e):
        y, h = _forward(x, delta, A, B, C, D, block_e, store_states=True)
        ctx.save_for_backward(x, delta, A, B, C, D, h)
        ctx.block_e = block_e
        return y

    @staticmethod
    def backward(ctx, dy):
        x, delta, A, B, C, D, h = ctx.saved_tensors
        rows, L, ED = x.shape
        N = A.shape[1]
        launch = _launch(x, A, ctx.block_e)
        grid = launch.pop("grid")
        f32 = dict(device=x.device, dtype=torch.float32)
        dx, ddelta = torch.empty(rows, L, ED, **f32), torch.empty(rows, L, ED, **f32)
        dB, dC = torch.empty(rows, grid[1], L, N, **f32), torch.empty(rows, grid[1], L, N, **f32)
        dA, dD = torch.empty(rows, ED, N, **f32), torch.empty(rows, ED, **f32)
        _scan_bwd[grid](x, delta, A, B, C, D, h, dy, dx, ddelta, dB, dC, dA, dD, L, ED, N,
                        *_strides(x, delta, B, C, A, D, dy), **launch)
        return (dx.to(x.dtype), ddelta.to(delta.dtype), dA.sum(0).to(A.dtype),
                dB.sum(1).to(B.dtype), dC.sum(1).to(C.dtype), dD.sum(0).to(D.dtype), None)


def selective_scan(x: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                   C: torch.Tensor, D: torch.Tensor, block_e: int | None = None) -> torch.Tensor:
    """mambapy's `MambaBlock.selective_scan` (module docstring), any strides, any float dtypes
    (fp32 inside). `block_e`: channels per program (a power of two; default ≤ 32)."""
    _check(x, delta, A, B, C, D)
    if x.shape[1] == 0:
        return x.new_zeros(x.shape, dtype=torch.float32)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, delta, A, B, C, D)):
        return SelectiveScan.apply(x, delta, A, B, C, D, block_e)
    return _forward(x, delta, A, B, C, D, block_e, store_states=False)[0]


class TritonMambaBlock(MambaBlock):
    """mambapy's Mamba layer with this scan: the same parameters, names and initialisation
    (a checkpoint of one backend loads into the other), the same projections and convolution."""

    def selective_scan(self, x, delta, A, B, C, D):
        return selective_scan(x, delta, A, B, C, D)
