"""The linear layers' weights and biases cast to autocast's dtype once a step, all in one
multi-tensor copy, and their gradients cast back in one.

Under bf16 autocast every F.linear casts its fp32 weight and bias to bf16 (a copy kernel each),
and its backward casts their bf16 gradients back to fp32 (another each). SASRec's two blocks at
the Beauty cell's shape have 10 linear layers: 40 of the 77 copies in a training step, each a
kernel of the CUDA-graph step. `CastOnce` makes the same casts with one torch._foreach_copy_
each way and runs the module's own code on the copies (torch.func.functional_call swaps them in
for the parameters). Rounding to nearest either way, the outputs and the gradients are the same
bit for bit as autocast's (tests/test_cast_once.py).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call


def linear_parameter_names(model: nn.Module) -> list[str]:
    """The parameters autocast casts for a matmul: nn.Linear's (nn.MultiheadAttention's output
    projection included) and nn.MultiheadAttention's packed input projection."""
    names = []
    for prefix, module in model.named_modules():
        if isinstance(module, nn.Linear):
            own = ("weight", "bias")
        elif isinstance(module, nn.MultiheadAttention):
            own = ("in_proj_weight", "in_proj_bias")
        else:
            continue
        names += [f"{prefix}.{n}" if prefix else n for n in own
                  if getattr(module, n, None) is not None]
    return names


class _CastAll(torch.autograd.Function):
    """(dtype, *tensors) -> the tensors in `dtype`; their gradients back in the tensors' own
    dtypes. One multi-tensor kernel each way on CUDA."""

    @staticmethod
    def forward(ctx, dtype, *tensors):
        ctx.dtypes = [t.dtype for t in tensors]
        ctx.set_materialize_grads(False)
        cast = [torch.empty_like(t, dtype=dtype) for t in tensors]
        torch._foreach_copy_(cast, list(tensors))
        return tuple(cast)

    @staticmethod
    def backward(ctx, *grads):
        present = [i for i, g in enumerate(grads) if g is not None]
        out = [None] * len(grads)
        if present:
            back = [torch.empty_like(grads[i], dtype=ctx.dtypes[i]) for i in present]
            torch._foreach_copy_(back, [grads[i] for i in present])
            for i, g in zip(present, back):
                out[i] = g
        return (None, *out)


class _Method(nn.Module):
    """model.<method> as a module's forward, so that functional_call can run it."""

    def __init__(self, model: nn.Module, method: str):
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, *args, **kwargs):
        return getattr(self.model, self.method)(*args, **kwargs)


class CastOnce:
    """Call `model.<method>` with its linear layers' parameters cast once, where autocast is
    on for the inputs' device and its dtype differs from theirs; else call it as it is."""

    def __init__(self, model: nn.Module, method: str = "encode"):
        self.names = linear_parameter_names(model)
        self.params = [model.get_parameter(n) for n in self.names]
        self.call = _Method(model, method)

    def __call__(self, *args):
        device = args[0].device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        if dtype is None or not self.params or all(p.dtype == dtype for p in self.params):
            return self.call(*args)
        cast = _CastAll.apply(dtype, *self.params)
        return functional_call(self.call, {f"model.{n}": t for n, t in zip(self.names, cast)},
                               args)
