"""torch's LayerNorm against the project's Triton kernels (models/fused_layer_norm.py), at the
Beauty SASRec step's shape (6,400 rows × 64: batch 128 × length 50) and a few others: the
kernels' GPU time per call, forward alone and forward + backward (the weight's and bias's
gradients included), as a CUDA graph replays them (kernel time only, no launch gaps), and
the largest differences from torch's results relative to their largest value. Inputs fp32,
as autocast gives LayerNorm. Also each width's first call in this process (a compile where
Triton's cache lacks the kernels).

    python -m benchmarks.layer_norm [--shapes 6400x64 6400x256 204800x64] [--name layer_norm_h100]
        [--block-values 1024 2048 4096] [--warps 2 4 8]

`--block-values` and `--warps` try other blocks (values a block: rows × the width padded to a
power of two) and warps than the kernels' (fused_layer_norm.BLOCK_VALUES, NUM_WARPS): a row
per shape and pair, torch's figures repeated in each.

The cell's own figure: `python -m benchmarks.grid_throughput --workloads beauty-sasrec-cell
--modes process-per-cell --cells-per-gpu 1 --set fused_layer_norm=true` against the same without.
"""
from __future__ import annotations

import argparse

import pandas as pd
import torch
import torch.nn.functional as F

from benchmarks.report import write
from benchmarks.timing import profiled, timed
from recsys_core.models import fused_layer_norm
from recsys_core.models.fused_layer_norm import layer_norm

CALLS = 50


def run(kind: str, x, w, b, dy, backward: bool):
    """One call of `kind`'s LayerNorm (and its backward)."""
    x, w, b = (t.detach().requires_grad_(backward) for t in (x, w, b))
    fn = layer_norm if kind == "triton" else \
        (lambda x, w, b, eps: F.layer_norm(x, x.shape[-1:], w, b, eps))
    y = fn(x, w, b, 1e-8)
    if backward:
        y.backward(dy)
    return y, x.grad, w.grad, b.grad


def per_call_us(kind: str, x, w, b, dy, backward: bool) -> float:
    def calls():
        for _ in range(CALLS):
            run(kind, x, w, b, dy, backward)
    if x.is_cuda:
        kernels = profiled(calls, x.device)[1]
        return sum(us for us, _ in kernels.values()) / CALLS
    return timed(calls)[0] / CALLS * 1e6


def relative(a: torch.Tensor, ref: torch.Tensor) -> float:
    a, ref = a.detach().double(), ref.detach().double()
    return float((a - ref).abs().max() / ref.abs().max())


def measure(rows: int, width: int, device) -> dict:
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(rows, width, device=device, generator=g) * 2 + 0.5
    w = 1 + 0.1 * torch.randn(width, device=device, generator=g)
    b = 0.1 * torch.randn(width, device=device, generator=g)
    dy = torch.randn(rows, width, device=device, generator=g)
    first_s = timed(lambda: run("triton", x, w, b, dy, backward=True), device)[0]
    ours, ref = run("triton", x, w, b, dy, True), run("torch", x, w, b, dy, True)
    row = {"rows": rows, "width": width, "block_values": fused_layer_norm.BLOCK_VALUES,
           "warps": fused_layer_norm.NUM_WARPS, "first_call_s": round(first_s, 3)}
    for kind in ("torch", "triton"):
        row[f"{kind}_fwd_us"] = per_call_us(kind, x, w, b, dy, backward=False)
        row[f"{kind}_fwd_bwd_us"] = per_call_us(kind, x, w, b, dy, backward=True)
    row["saved_us"] = row["torch_fwd_bwd_us"] - row["triton_fwd_bwd_us"]
    row.update({f"diff_{n}": relative(a, r) for n, a, r in zip(("y", "dx", "dw", "db"), ours, ref)})
    return row


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.layer_norm")
    p.add_argument("--shapes", nargs="+", default=["6400x64", "6400x128", "6400x256",
                                                    "204800x64"], help="ROWSxWIDTH")
    p.add_argument("--block-values", type=int, nargs="+", default=[fused_layer_norm.BLOCK_VALUES])
    p.add_argument("--warps", type=int, nargs="+", default=[fused_layer_norm.NUM_WARPS])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="results/benchmarks/layer_norm")
    p.add_argument("--name", default="layer_norm")
    args = p.parse_args()
    device = torch.device(args.device)
    rows = []
    for shape in args.shapes:
        n, width = map(int, shape.split("x"))
        for values in args.block_values:
            for warps in args.warps:
                fused_layer_norm.BLOCK_VALUES, fused_layer_norm.NUM_WARPS = values, warps
                rows.append(measure(n, width, device))
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (interpreter)"
    unit = "kernel µs per call (torch.profiler)" if device.type == "cuda" else "wall µs per call"
    write(args.out, args.name, f"# LayerNorm: torch's against the Triton kernels, on {name}",
          f"torch {torch.__version__}. {unit}, over {CALLS} calls; `saved_us`: torch's forward + "
          "backward less the kernels'. The Beauty SASRec step has 5 LayerNorms of 6400 × 64.",
          table, data=table)


if __name__ == "__main__":
    main()
