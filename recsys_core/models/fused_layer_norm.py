"""LayerNorm over the last dimension as two Triton kernels: the forward, and one backward pass
that writes the input's gradient and each block's partial sums of the weight's and bias's.

At the Beauty SASRec cell's shape (6,400 rows × 64) torch's LayerNorm took 12 µs forward, 7 µs
for the input's gradient and 18 µs for the weight's and bias's on an H100: 0.185 of a 1.257 ms
training step for its 5 LayerNorms (results/benchmarks/grid_throughput_h100/README.md).
`fused_layer_norm: true` (setup.build_run) turns every nn.LayerNorm of a CUDA run's model into
`FusedLayerNorm` (same parameters and checkpoints); `python -m benchmarks.layer_norm` times both.
As torch's under autocast, it computes in fp32 and returns fp32; without autocast it returns the
input's dtype. Deterministic (no atomics), but not bitwise torch's (a two-pass mean and variance
where torch uses Welford's)."""
from __future__ import annotations

import torch
from torch import nn

from recsys_core.kernel_device import kernels_run_on, load_on_device, wait_for_compiles

_KERNELS = None


def _kernels():
    """(forward, backward), built on first use (CPU installs need no triton)."""
    global _KERNELS
    if _KERNELS is not None:
        return _KERNELS
    import triton
    import triton.language as tl

    # M (the rows) and P (the blocks) change between the training step and the evaluation's
    # batches: not specialised on, so one compiled kernel serves every call of a width.
    @triton.jit(do_not_specialize=["M"])
    def ln_fwd(x_ptr, w_ptr, b_ptr, y_ptr, mean_ptr, rstd_ptr, M, N, eps,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.arange(0, BLOCK_N)
        rmask, cmask = rows < M, cols < N
        mask = rmask[:, None] & cmask[None, :]
        offs = rows[:, None].to(tl.int64) * N + cols[None, :]
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        mean = tl.sum(x, 1) / N
        d = tl.where(mask, x - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(d * d, 1) / N + eps)
        w = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
        y = d * rstd[:, None] * w[None, :] + b[None, :]
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)
        tl.store(mean_ptr + rows, mean, mask=rmask)
        tl.store(rstd_ptr + rows, rstd, mask=rmask)

    @triton.jit(do_not_specialize=["M", "P"])
    def ln_bwd(x_ptr, w_ptr, dy_ptr, mean_ptr, rstd_ptr, dx_ptr, part_ptr, M, N, P,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        # dx = rstd · (w·dy − mean(w·dy) − x̂ · mean(x̂ · w·dy)) per row; this block's sums of
        # dy·x̂ (the weight's gradient) and dy (the bias's) into part[0, block], part[1, block].
        block = tl.program_id(0)
        rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.arange(0, BLOCK_N)
        rmask, cmask = rows < M, cols < N
        mask = rmask[:, None] & cmask[None, :]
        offs = rows[:, None].to(tl.int64) * N + cols[None, :]
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(mean_ptr + rows, mask=rmask, other=0.0)
        rstd = tl.load(rstd_ptr + rows, mask=rmask, other=0.0)
        w = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
        xhat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
        wdy = w[None, :] * dy
        c1 = tl.sum(xhat * wdy, 1) / N
        c2 = tl.sum(wdy, 1) / N
        dx = (wdy - (xhat * c1[:, None] + c2[:, None])) * rstd[:, None]
        tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        tl.store(part_ptr + block * N + cols, tl.sum(dy * xhat, 0), mask=cmask)
        tl.store(part_ptr + (P + block) * N + cols, tl.sum(dy, 0), mask=cmask)

    _KERNELS = ln_fwd, ln_bwd
    return _KERNELS


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


# A block of rows holds about BLOCK_VALUES values (32 rows of 64); NUM_WARPS warps run it.
# `python -m benchmarks.layer_norm --block-values ... --warps ...` tries others on a GPU.
BLOCK_VALUES, NUM_WARPS = 2048, 4


def _blocks(n: int) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_N): the width padded to a power of two, BLOCK_VALUES values a block."""
    block_n = 1 << max(n - 1, 1).bit_length()
    return max(1, BLOCK_VALUES // block_n), block_n


def _fwd_args(x, w, b, y, mean, rstd, m: int, n: int, eps: float):
    """The forward kernel's arguments and options; tensors or, for `precompile`, dtypes."""
    block_m, block_n = _blocks(n)
    return (x, w, b, y, mean, rstd, m, n, eps), \
        {"BLOCK_M": block_m, "BLOCK_N": block_n, "num_warps": NUM_WARPS}


def _bwd_args(x, w, dy, mean, rstd, dx, part, m: int, n: int, p: int):
    block_m, block_n = _blocks(n)
    return (x, w, dy, mean, rstd, dx, part, m, n, p), \
        {"BLOCK_M": block_m, "BLOCK_N": block_n, "num_warps": NUM_WARPS}


def precompile_job(width: int) -> str:
    """The name of the job compiling a width's kernels (kernel_device.BackgroundCompile)."""
    return f"layer_norm_{width}"


def precompile(width: int, dtype: torch.dtype, param_dtype: torch.dtype = torch.float32) -> None:
    """Compile and load on the current CUDA device both kernels for rows of `width` values in
    `dtype` (fp32 under autocast) with parameters in `param_dtype` (precompile.py)."""
    fwd, bwd = _kernels()
    f32 = torch.float32
    args, options = _fwd_args(dtype, param_dtype, param_dtype, dtype, f32, f32, 64, width, 1e-5)
    load_on_device(fwd.warmup(*args, grid=(1,), **options))
    args, options = _bwd_args(dtype, param_dtype, dtype, f32, f32, dtype, f32, 64, width, 1)
    load_on_device(bwd.warmup(*args, grid=(1,), **options))


class _LayerNorm(torch.autograd.Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, x, weight, bias, eps: float):
        shape, n = x.shape, x.shape[-1]
        x2 = x.reshape(-1, n).contiguous()
        m = x2.shape[0]
        y = torch.empty_like(x2)
        mean = torch.empty(m, dtype=torch.float32, device=x.device)
        rstd = torch.empty_like(mean)
        wait_for_compiles(precompile_job(n))
        args, options = _fwd_args(x2, weight, bias, y, mean, rstd, m, n, eps)
        block_m = options["BLOCK_M"]
        _kernels()[0][(_cdiv(m, block_m),)](*args, **options)
        ctx.save_for_backward(x2, weight, mean, rstd)
        ctx.shape = shape
        return y.reshape(shape)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, dy):
        x2, weight, mean, rstd = ctx.saved_tensors
        m, n = x2.shape
        dy2 = dy.reshape(m, n).contiguous()
        dx = torch.empty_like(x2)
        block_m = _blocks(n)[0]
        p = _cdiv(m, block_m)
        part = torch.empty((2, p, n), dtype=torch.float32, device=x2.device)
        args, options = _bwd_args(x2, weight, dy2, mean, rstd, dx, part, m, n, p)
        _kernels()[1][(p,)](*args, **options)
        dw, db = part.sum(1).to(weight.dtype)
        return dx.reshape(ctx.shape), dw, db, None


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
               eps: float) -> torch.Tensor:
    """F.layer_norm(x, x.shape[-1:], weight, bias, eps) through the Triton kernels."""
    return _LayerNorm.apply(x, weight, bias, eps)


class FusedLayerNorm(nn.LayerNorm):
    """nn.LayerNorm whose forward runs `layer_norm` where the kernels can run (CUDA, or the
    CPU under Triton's interpreter), torch's elsewhere; the same parameters and state dict."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if kernels_run_on(x.device.type):
            return layer_norm(x, self.weight, self.bias, self.eps)
        return super().forward(x)


def fusable(module: nn.Module) -> bool:
    """An nn.LayerNorm over the last dimension with a weight and a bias (every model's)."""
    return type(module) is nn.LayerNorm and len(module.normalized_shape) == 1 and \
        module.weight is not None and module.bias is not None


def fuse_layer_norms(model: nn.Module) -> int:
    """Every fusable LayerNorm of `model` becomes a FusedLayerNorm, in place; how many."""
    found = [m for m in model.modules() if fusable(m)]
    for module in found:
        module.__class__ = FusedLayerNorm
    return len(found)


def fuse_for_run(cfg, model: nn.Module, device_type: str) -> str:
    """`fused_layer_norm: true`: the model's LayerNorms fused where the kernels run; whose
    kernels they run (the result's `layer_norm_kernels`)."""
    if not kernels_run_on(device_type):
        return "torch (not CUDA)"
    if cfg.compile_encoder:
        return "torch (compile_encoder: Inductor fuses the encoder's LayerNorms itself)"
    return f"triton ({fuse_layer_norms(model)} LayerNorms)"


def fused_widths(model: nn.Module) -> list[int]:
    """The widths of the model's FusedLayerNorms (one compiled kernel pair each)."""
    return sorted({m.normalized_shape[0] for m in model.modules()
                   if isinstance(m, FusedLayerNorm)})
