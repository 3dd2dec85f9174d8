"""The GPU epoch benchmark's check of the Mamba layers' `triton` scan (recsys_core/models/
selective_scan.py) against mambapy's `MambaBlock.selective_scan`, on the scan's inputs as one
Mamba layer of the benchmark's shape makes them (rows = batch, L = max_len, ED = expand x D,
N = d_state; the layer's own strides) from a normal [rows, L, D] input:

- fp32: the layer in fp32; triton against mambapy (TF32 off);
- bf16 autocast: the layer under bf16 autocast (x, B, C in bf16, Δ in fp32); triton against
  mambapy on the same values in fp32 (mambapy's own autocast contracts h with C in bf16);

each as max |triton - mambapy| / max |mambapy| of y and of every gradient (a normal dy), and
the scan's own GPU time (median; forward without a gradient, forward + backward; under the
layer's autocast, as in training) and peak memory of forward + backward, for either backend.
"""
from __future__ import annotations

import torch
from mambapy.mamba import MambaBlock, MambaConfig

from benchmarks.timing import median_s
from recsys_core.models.selective_scan import selective_scan

GRADS = ("dx", "ddelta", "dA", "dB", "dC", "dD")


def rel(got: torch.Tensor, want: torch.Tensor) -> float:
    want = want.detach().double()
    return float((got.detach().double() - want).abs().max() / want.abs().max().clamp(min=1e-30))


def layer_inputs(rows: int, L: int, dim: int, d_state: int, expand: int, device,
                 autocast: bool) -> list[torch.Tensor]:
    """(x, Δ, A, B, C, D) as a freshly initialised mambapy layer passes them to its scan."""
    torch.manual_seed(0)
    layer = MambaBlock(MambaConfig(d_model=dim, n_layers=1, d_state=d_state,
                                   expand_factor=expand)).to(device)
    captured = []
    layer.selective_scan = lambda *args: captured.append(args) or torch.zeros_like(args[0])
    with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=autocast):
        layer(torch.randn(rows, L, dim, device=device))
    return [t.detach() for t in captured[0]]


def mambapy_scan(*args: torch.Tensor) -> torch.Tensor:
    return MambaBlock.selective_scan(None, *args)    # uses nothing of the layer but its code


def compare(inputs: list[torch.Tensor]) -> dict:
    ref = [t.detach().float().requires_grad_() for t in inputs]
    ours = [t.detach().requires_grad_() for t in inputs]       # the layer's dtypes and strides
    want, got = mambapy_scan(*ref), selective_scan(*ours)
    dy = torch.randn(want.shape, device=want.device, generator=torch.Generator(
        want.device).manual_seed(1))
    want_grads = torch.autograd.grad(want, ref, dy)
    grads = torch.autograd.grad(got, ours, dy)
    with torch.no_grad():
        no_grad = selective_scan(*inputs)
    return {"y": rel(got, want), "y_no_grad": rel(no_grad, want),
            **{name: rel(g, w) for name, g, w in zip(GRADS, grads, want_grads)}}


def speed(scan, inputs: list[torch.Tensor], device, repeats: int, autocast: bool) -> dict:
    """Seconds of the scan alone (under bf16 autocast where the layer was): forward without a
    gradient, forward + backward; peak MB of forward + backward."""
    leaves = [t.detach().requires_grad_() for t in inputs]
    dy = torch.ones(inputs[0].shape, device=device)

    def forward():
        with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=autocast):
            scan(*inputs)

    def both():
        with torch.autocast(device.type, torch.bfloat16, enabled=autocast):
            y = scan(*leaves)
        torch.autograd.grad(y, leaves, dy)

    out = {"forward_s": median_s(forward, device, repeats, warmup=1),
           "forward_backward_s": median_s(both, device, repeats, warmup=1)}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        both()
        out["peak_mb"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    return out


def check_scan(rows: int, L: int, dim: int, d_state: int, expand: int, device,
               repeats: int = 5) -> list[dict]:
    """One row per precision: the shape, the differences, the two backends' times."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False     # mambapy's h @ C in true fp32
    out = []
    for precision in ("fp32", "bf16 autocast"):
        inputs = layer_inputs(rows, L, dim, d_state, expand, device, precision != "fp32")
        row = {"precision": precision, "rows": rows, "L": L, "ED": expand * dim, "N": d_state,
               **compare(inputs)}
        for name, scan in (("mambapy", mambapy_scan), ("triton", selective_scan)):
            times = speed(scan, inputs, device, repeats, autocast=precision != "fp32")
            row.update({f"{name}_{k}": v for k, v in times.items()})
        out.append(row)
        del inputs
    return out
