"""The full-softmax cross-entropy of the standard output layer in one pass over the logits.

At the study's sizes the loss over [batch x length x items] logits (fp32 copy, softmax, NLL and
their backward passes) was half of a CUDA-graph training step (results/benchmarks/gpu_notes.md).
`linear_cross_entropy` computes the same loss with one Triton kernel per row that reads the bf16
logits (online log-sum-exp, loss) and writes their gradient in the same pass: the gradient of a
final loss is known at the forward. The training step (train_step.py) uses it on the GPU.
"""
from __future__ import annotations

import torch

from recsys_core.kernel_device import load_on_device, wait_for_compiles
from recsys_core.models.gru4rec import StackedRNN


_KERNEL = None


def _ce_kernel():
    """The Triton kernel, built on first use (CPU installs need no triton)."""
    global _KERNEL
    if _KERNEL is not None:
        return _KERNEL
    import triton
    import triton.language as tl

    @triton.jit
    def ce_fwd_bwd(logits_ptr, grad_ptr, targets_ptr, loss_ptr, inv_ptr, stride, V, VP,
                   BLOCK: tl.constexpr):
        # One row: online log-sum-exp over columns < V, loss = lse - x[target] (0 where the
        # target is 0), grad = (softmax - onehot) / count for columns < VP (0 past V).
        row = tl.program_id(0).to(tl.int64)
        t = tl.load(targets_ptr + row)
        inv = tl.load(inv_ptr)
        base = logits_ptr + row * stride
        gbase = grad_ptr + row * stride
        m = tl.full([BLOCK], float("-inf"), tl.float32)
        s = tl.zeros([BLOCK], tl.float32)
        for off in range(0, V, BLOCK):
            cols = off + tl.arange(0, BLOCK)
            x = tl.load(base + cols, mask=cols < V, other=float("-inf")).to(tl.float32)
            m_new = tl.maximum(m, x)
            empty = m_new == float("-inf")
            s = tl.where(empty, 0.0, s * tl.exp(m - m_new) + tl.exp(x - m_new))
            m = m_new
        mx = tl.max(m, 0)
        total = tl.sum(tl.where(m == float("-inf"), 0.0, s * tl.exp(m - mx)), 0)
        lse = mx + tl.log(total)
        valid = t != 0
        xt = tl.load(base + t).to(tl.float32)
        tl.store(loss_ptr + row, tl.where(valid, lse - xt, 0.0))
        w = tl.where(valid, inv, 0.0)
        for off in range(0, VP, BLOCK):
            cols = off + tl.arange(0, BLOCK)
            x = tl.load(base + cols, mask=cols < V, other=float("-inf")).to(tl.float32)
            g = (tl.exp(x - lse) - tl.where(cols == t, 1.0, 0.0)) * w
            tl.store(gbase + cols, g.to(grad_ptr.dtype.element_ty), mask=cols < VP)

    _KERNEL = ce_fwd_bwd
    return _KERNEL


def padded_rows(rows: int) -> int:
    return -(-rows // 8) * 8


def _ce_args(logits, grad, targets, losses, inv, stride: int, n_valid: int, vp: int):
    """The kernel's arguments and options; tensors or, for `precompile`, their dtypes."""
    block = min(1024, 1 << (max(n_valid, 2) - 1).bit_length())
    return (logits, grad, targets, losses, inv, stride, n_valid, vp), \
        {"BLOCK": block, "num_warps": 4}


PRECOMPILE_JOB = "fused_ce"     # its job's name in kernel_device.BackgroundCompile


def precompile(table_rows: int, n_valid: int, dtype: torch.dtype,
               targets_dtype: torch.dtype) -> None:
    """Compile and load on the current CUDA device the kernel `linear_cross_entropy` will
    launch for an item table of `table_rows` rows, `n_valid` of them scored, logits in `dtype`
    and targets of `targets_dtype` (kernel_device.BackgroundCompile runs it during setup).
    Triton specialises a kernel on its tensors' dtypes and 16-byte alignment and on its
    integers' values: fresh tensors are aligned, and the integers are the real call's own."""
    vp = padded_rows(table_rows)
    args, options = _ce_args(dtype, dtype, targets_dtype, torch.float32, torch.float32, vp,
                             n_valid, vp)
    load_on_device(_ce_kernel().warmup(*args, grid=(1,), **options))


class _LinearCE(torch.autograd.Function):
    """logits = hidden @ weight.T + bias (in `dtype`), then the fused loss; the backward
    scales the small results (dX, db) by the incoming gradient, and dW through dX's input.

    The item table is copied once into a `dtype` table padded to a multiple of 8 rows (the
    cast autocast would make anyway; aligned matmuls), and its gradient comes straight out of
    one matmul in fp32: no fp32 padded copy, no bf16 gradient cast back, no slice's zero-filled
    copy. With the int32 embedding ids (base.embed_items), a Beauty step went from 1.527 to
    1.463 ms of kernels on an H100 (results/benchmarks/grid_throughput_h100/README.md)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, n_valid: int, dtype):
        rows, width = weight.shape
        vp = padded_rows(rows)
        w = weight.new_empty((vp, width), dtype=dtype)
        w[:rows].copy_(weight)
        w[rows:].zero_()
        b = None
        if bias is not None:
            b = bias.new_zeros(vp, dtype=dtype)
            b[:len(bias)].copy_(bias)
        h = hidden.to(dtype)
        logits = torch.nn.functional.linear(h, w, b)
        n = logits.shape[0]
        grad = torch.empty_like(logits)
        losses = torch.empty(n, dtype=torch.float32, device=logits.device)
        inv = 1.0 / (targets != 0).sum().clamp(min=1).float()
        wait_for_compiles(PRECOMPILE_JOB)
        args, options = _ce_args(logits, grad, targets.contiguous(), losses, inv,
                                 logits.stride(0), n_valid, vp)
        _ce_kernel()[(n,)](*args, **options)
        ctx.saved = (h, w, grad, hidden.dtype, weight.dtype, rows,
                     None if bias is None else len(bias))
        return losses.sum() * inv

    @staticmethod
    def backward(ctx, grad_out):
        h, w, grad, h_dtype, w_dtype, rows, bias_len = ctx.saved
        ctx.saved = None
        g = grad_out.float()
        dh = ((grad @ w).float() * g).to(h_dtype)
        dw = matmul_fp32(grad.t(), (h.float() * g).to(h.dtype))[:rows].to(w_dtype)
        db = None
        if bias_len is not None:
            db = (grad.sum(0, dtype=torch.float32)[:bias_len] * g).to(w_dtype)
        return dh, dw, db, None, None, None


def matmul_fp32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b with an fp32 result: for bf16 on CUDA, the matmul's fp32 accumulators written as
    they are (no bf16 rounding, no cast after it); on the CPU (Triton's interpreter in the
    tests), the same products summed in fp32."""
    if a.dtype == torch.float32:
        return a @ b
    if a.is_cuda:
        return torch.mm(a, b, out_dtype=torch.float32)
    return a.float() @ b.float()


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         targets: torch.Tensor, n_valid: int,
                         dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """With logits = hidden @ weight.T + bias computed in `dtype` (weight: the whole item table,
    >= n_valid rows, e.g. BERT4Rec's mask token after them; bias: n_valid entries or None):
    sum over rows with target != 0 of (logsumexp(logits[r, :n_valid]) - logits[r, target])
    / their count, i.e. `F.cross_entropy(logits[:, :n_valid].float(), targets, ignore_index=0,
    reduction="sum") / count`, the loss in one pass over the logits (CUDA, Triton). Rows of
    the table past n_valid get no gradient."""
    return _LinearCE.apply(hidden, weight, bias, targets, n_valid, dtype)


def fused_loss_unsupported_reason(model) -> str | None:
    """None when the model's loss is the base model's full-softmax CE over the standard output
    layer (item embeddings, plus BERT4Rec's output bias), which the fused loss reproduces."""
    from recsys_core.models.base import SequentialModel
    cls = type(model)
    if cls.forward is not SequentialModel.forward:
        return f"{cls.__name__} has its own forward"
    if cls.logits is SequentialModel.logits:
        return None
    from recsys_core.models.bert4rec import BERT4Rec
    if cls.logits is BERT4Rec.logits:
        return None
    return f"{cls.__name__} has its own output layer"


def fused_loss_reason(cfg, model, device_type: str, fused_loss: bool = True) -> str | None:
    """Why the training step (train_step.py) computes the model's own loss, or None: it
    computes `linear_cross_entropy`."""
    return ("fused_loss=False" if not fused_loss else
            "not CUDA" if device_type != "cuda" else
            f"loss={cfg.loss}" if cfg.loss != "ce" else
            fused_loss_unsupported_reason(model))


def logits_dtype(mixed_precision: str) -> torch.dtype:
    """The dtype of the fused loss's logits in a run of this `mixed_precision`."""
    return torch.bfloat16 if mixed_precision == "bf16" else torch.float32


def dropout_off(model) -> list:
    """Every dropout probability of the model set to 0 (nn.Dropout's p, the `dropout` of RNNs
    and attention), for checking the fused loss against the model's own; returns what to
    restore."""
    saved = []
    for mod in model.modules():
        for name in ("p", "dropout") if isinstance(mod, torch.nn.Dropout) else ("dropout",):
            value = getattr(mod, name, None)
            if isinstance(value, float) and value > 0 and (
                    name == "p" or isinstance(mod, (torch.nn.RNNBase, torch.nn.MultiheadAttention,
                                                    StackedRNN))):
                saved.append((mod, name, value))
                setattr(mod, name, 0.0)
    return saved
