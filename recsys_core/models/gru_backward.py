"""A GRU layer whose backward pass is the project's own: cuDNN's forward, then the gradient
with its recurrence in one Triton kernel and everything else parallel over positions.

Why: at the ML-1M shape (batch 128, L 200, D 64, 2 layers) half of GRU4Rec's GPU time was one
kernel of cuDNN's backward, `GRU_elementWise_bp2` (1.04 ms a layer a step on an H100), which no
setting of PyTorch's turns off (results/benchmarks/rnn_bias/). The gradient of a GRU needs
only one sequential part. With PyTorch's gates (W = [W_r; W_z; W_n], rows per gate)

    r = σ(x W_ir + b_ir + h W_hr + b_hr)      z = σ(x W_iz + b_iz + h W_hz + b_hz)
    n = tanh(x W_in + b_in + r ⊙ (h W_hn + b_hn))      h' = (1 − z) ⊙ n + z ⊙ h

every gate of every position is recomputed at once from the layer's input and its outputs
(h_{t-1} is the output before t: two matmuls), and then, walking back from the last position,

    g_t = dout_t + carry_t                              (dLoss/dh_t, carry_{T-1} = 0)
    carry_{t-1} = g_t ⊙ z_t + [g_t ⊙ c_r, g_t ⊙ c_z, g_t ⊙ c_n]_t W_hh

with c_n = (1 − z)(1 − n²) r, c_r = (1 − z)(1 − n²) (h W_hn + b_hn) r (1 − r),
c_z = (h − n) z (1 − z). That walk is one Triton kernel (`walk_triton`: one program per 16
rows of the batch, W_hh in registers, the gates and their gradients computed beside the
carry; on the CPU the same in torch, `walk_torch`); the weights' and the input's gradients
follow as matmuls over all positions.

The forward is cuDNN's (or the CPU's) own, without the state a backward of its would keep;
matmuls in the recurrence use TF32 where cuDNN's would (torch.backends.cudnn.allow_tf32).
On the CPU the kernel runs only under Triton's interpreter (TRITON_INTERPRET=1), as the tests
run it.
"""
from __future__ import annotations

import contextlib
import functools
import os

import torch
import torch.nn.functional as F
from torch import nn

from recsys_core.kernel_device import kernels_run_on

BACKWARDS = ("cudnn", "triton")
BACKWARD_ENV = "RECSYS_GRU_BACKWARD"
BLOCK_ROWS = 16          # rows of the batch per program (tl.dot needs 16 or more)


@functools.cache
def _kernel():
    """The Triton kernel, defined on first use (a CPU install needs no triton)."""
    import triton
    import triton.language as tl

    @triton.jit
    def walk(dout_ptr, gi_ptr, gh_ptr, hp_ptr, w_ptr, dgi_ptr, dgh_ptr, B, T,
             H: tl.constexpr, BLOCK: tl.constexpr, PRECISION: tl.constexpr):
        # BLOCK rows of the batch, from the last position to the first; per position the
        # gates from their pre-activations (off the carry's path), then g, the gates'
        # gradients, and the carry through W_hh. [B, T, H] and [B, T, 3H] tensors, contiguous.
        rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        cols = tl.arange(0, H)
        mask = (rows < B)[:, None]
        w = w_ptr + cols[:, None] * H + cols[None, :]           # W_hh is [3H, H]
        w_r = tl.load(w)
        w_z = tl.load(w + H * H)
        w_n = tl.load(w + 2 * H * H)
        carry = tl.zeros([BLOCK, H], dtype=tl.float32)
        row_h = rows[:, None].to(tl.int64) * T * H + cols[None, :]
        row_g = rows[:, None].to(tl.int64) * T * 3 * H + cols[None, :]
        for i in range(T):
            at_h = row_h + (T - 1 - i) * H
            at_g = row_g + (T - 1 - i) * 3 * H
            r = tl.sigmoid(tl.load(gi_ptr + at_g, mask=mask, other=0.0)
                           + tl.load(gh_ptr + at_g, mask=mask, other=0.0))
            z = tl.sigmoid(tl.load(gi_ptr + at_g + H, mask=mask, other=0.0)
                           + tl.load(gh_ptr + at_g + H, mask=mask, other=0.0))
            h_n = tl.load(gh_ptr + at_g + 2 * H, mask=mask, other=0.0)
            n = 2 * tl.sigmoid(2 * (tl.load(gi_ptr + at_g + 2 * H, mask=mask, other=0.0)
                                    + r * h_n)) - 1                     # tanh
            c_in = (1 - z) * (1 - n * n)
            c_z = (tl.load(hp_ptr + at_h, mask=mask, other=0.0) - n) * z * (1 - z)
            g = tl.load(dout_ptr + at_h, mask=mask, other=0.0) + carry
            d_r = g * c_in * h_n * r * (1 - r)
            d_z = g * c_z
            d_n = g * c_in * r
            tl.store(dgh_ptr + at_g, d_r, mask=mask)
            tl.store(dgh_ptr + at_g + H, d_z, mask=mask)
            tl.store(dgh_ptr + at_g + 2 * H, d_n, mask=mask)
            tl.store(dgi_ptr + at_g, d_r, mask=mask)
            tl.store(dgi_ptr + at_g + H, d_z, mask=mask)
            tl.store(dgi_ptr + at_g + 2 * H, g * c_in, mask=mask)
            carry = g * z + tl.dot(d_r, w_r, input_precision=PRECISION)
            carry += tl.dot(d_z, w_z, input_precision=PRECISION)
            carry += tl.dot(d_n, w_n, input_precision=PRECISION)

    return walk


def walk_torch(dout, gi, gh, h_prev, w_hh):
    """(dLoss/d gi, dLoss/d gh) [B, T, 3H] from the gates' pre-activations gi = x W_ih + b_ih
    and gh = h_{t-1} W_hh + b_hh: the gates at once, then the walk back (module doc) one
    position at a time, in torch."""
    i_r, i_z, i_n = gi.chunk(3, -1)
    h_r, h_z, h_n = gh.chunk(3, -1)
    r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    c_in = (1 - z) * (1 - n * n)
    c_r, c_z, c_n = c_in * h_n * r * (1 - r), (h_prev - n) * z * (1 - z), c_in * r
    g = torch.empty_like(dout)
    carry = torch.zeros_like(dout[:, 0])
    for t in range(dout.shape[1] - 1, -1, -1):
        g[:, t] = gt = dout[:, t] + carry
        carry = gt * z[:, t] + torch.cat([gt * c_r[:, t], gt * c_z[:, t], gt * c_n[:, t]], -1) @ w_hh
    d_r, d_z = g * c_r, g * c_z
    return torch.cat([d_r, d_z, g * c_in], -1), torch.cat([d_r, d_z, g * c_n], -1)


def walk_triton(dout, gi, gh, h_prev, w_hh):
    """The same in one Triton kernel (CUDA, or the CPU under TRITON_INTERPRET=1)."""
    if not kernels_run_on(dout.device.type):
        raise RuntimeError(f"{BACKWARD_ENV}=triton on the CPU runs only under Triton's "
                           "interpreter (TRITON_INTERPRET=1 before the kernel is built); "
                           f"{BACKWARD_ENV}=cudnn uses autograd's backward")
    b, t, h = dout.shape
    d_gi, d_gh = torch.empty_like(gi), torch.empty_like(gh)
    grid = (-(-b // BLOCK_ROWS),)
    _kernel()[grid](dout.contiguous(), gi.contiguous(), gh.contiguous(), h_prev.contiguous(),
                    w_hh.contiguous(), d_gi, d_gh, b, t, H=h, BLOCK=BLOCK_ROWS,
                    PRECISION="tf32" if torch.backends.cudnn.allow_tf32 else "ieee", num_warps=4)
    return d_gi, d_gh


MAX_HIDDEN = 64    # W_hh stays in registers: 3 x 64 x 64 fp32 is 48 KB; at 128 it would spill


def triton_fits(hidden: int) -> bool:
    """The kernel's [H] vectors need a power of two, its dot products 16 or more, and W_hh
    must fit its registers (larger GRUs, e.g. the ML-20M shape's D 256, keep cuDNN's)."""
    return 16 <= hidden <= MAX_HIDDEN and hidden & (hidden - 1) == 0


@contextlib.contextmanager
def cudnn_precision():
    """fp32 matmuls in TF32 where cuDNN's RNN would run its own so
    (torch.backends.cudnn.allow_tf32, on by default; torch's matmuls default to fp32)."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


class _GRULayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh, walk):
        hidden = w_hh.shape[1]
        h0 = x.new_zeros(1, x.shape[0], hidden)
        # train=False: no dropout in one layer, and cuDNN keeps no state for its own backward
        out = torch._VF.gru(x, h0, [w_ih, w_hh, b_ih, b_hh], True, 1, 0.0, False, False, True)[0]
        ctx.save_for_backward(x, out, w_ih, w_hh, b_ih, b_hh)
        ctx.walk = walk
        return out

    @staticmethod
    def backward(ctx, dout):
        x, out, w_ih, w_hh, b_ih, b_hh = ctx.saved_tensors
        h_prev = torch.cat([torch.zeros_like(out[:, :1]), out[:, :-1]], 1)
        with cudnn_precision():
            gi = F.linear(x, w_ih, b_ih)
            gh = F.linear(h_prev, w_hh, b_hh)
            d_gi, d_gh = ctx.walk(dout.contiguous().to(gi.dtype), gi, gh, h_prev, w_hh)
            d_gi, d_gh = d_gi.flatten(0, 1), d_gh.flatten(0, 1)
            ones = d_gi.new_ones(d_gi.shape[0])      # bias gradients as matrix-vector products:
            return ((d_gi @ w_ih).view_as(x),        # faster than sums over 25,600 rows
                    d_gi.t() @ x.flatten(0, 1), d_gh.t() @ h_prev.flatten(0, 1),
                    d_gi.t() @ ones, d_gh.t() @ ones, None)


def backward_choice(device_type: str) -> str:
    """$RECSYS_GRU_BACKWARD where set; else `triton` on CUDA, `cudnn` (the module's own
    backward, which on the CPU is autograd's) elsewhere."""
    forced = os.environ.get(BACKWARD_ENV)
    if forced:
        if forced not in BACKWARDS:
            raise ValueError(f"{BACKWARD_ENV}={forced!r}; valid: {', '.join(BACKWARDS)}")
        if forced == "triton" and not kernels_run_on(device_type):
            raise ValueError(f"{BACKWARD_ENV}=triton needs a CUDA device (or Triton's interpreter, "
                             "TRITON_INTERPRET=1, on the CPU); unset it or use cudnn")
        return forced
    return "triton" if device_type == "cuda" else "cudnn"


def gru_layer(layer: nn.GRU, x: torch.Tensor, walk=None) -> torch.Tensor:
    """[B, T, H] outputs of a one-layer, one-way, batch-first GRU with biases, zero initial
    state, its gradient through this module's backward (`walk`: the recurrence, by default
    Triton's); fp32 input."""
    walk = walk or walk_triton
    return _GRULayer.apply(x, layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0,
                           layer.bias_hh_l0, walk)


def own_backward_fits(rnn: nn.Module) -> bool:
    """Whether `rnn` can train through `gru_layer`: a one-layer GRU (GRU4Rec of one block,
    or each layer of `StackedRNN`: rnn_dropout "torch"; a multi-layer nn.GRU keeps cuDNN's
    dropout between its layers, which only cuDNN's own backward reproduces)."""
    return (type(rnn) is nn.GRU and rnn.num_layers == 1 and rnn.bias and rnn.batch_first
            and not rnn.bidirectional and triton_fits(rnn.hidden_size))
