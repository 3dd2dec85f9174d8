"""The GRU's own backward (recsys_core/models/gru_backward.py) against cuDNN's, on the GPU, at
the study's ML-1M shape: GRU4Rec's recurrence as `rnn_dropout: torch` runs it (one-layer GRUs
with torch's dropout between them, models/gru4rec.StackedRNN), forward + backward through
`gru4rec.run_rnn` with and without the own backward, eager.

Per variant: the median step time, every kernel summed by name over one profiled step, and
the gradients of the input and of every parameter against cuDNN's (max |diff| / max |cuDNN|;
both run their matmuls in TF32, cuDNN's default). Session 25 (one H100,
results/benchmarks/gru_backward/): kernels 2.62 → 1.30 ms a step, cuDNN's
`GRU_elementWise_bp2` (1.70 ms) gone; gradients within 2-5e-4. The trainer's epoch:
`RECSYS_GRU_BACKWARD={cudnn,triton} python -m benchmarks.gpu_epoch --models gru4rec --modes graph
--rnn-dropout torch`.

    python -m benchmarks.gru_backward --out-dir results/benchmarks/gru_backward
"""
from __future__ import annotations

import sys

import torch
from torch import nn

from benchmarks.rnn_bias import kernel_ms
from benchmarks.rnn_precision import (cuda_missing, recurrence_input, rnn_parser, run_facts,
                                      write_report)
from benchmarks.timing import median_s
from recsys_core.models.gru4rec import StackedRNN, run_rnn
from recsys_core.models.gru_backward import MAX_HIDDEN, triton_fits


def main(argv: list[str] | None = None) -> int:
    p = rnn_parser("python -m benchmarks.gru_backward", __doc__)
    p.add_argument("--out-dir", default=None, help="gru_backward.json and .md go here")
    args = p.parse_args(argv)
    if not triton_fits(args.embedding_dim):     # else both rows would time cuDNN's backward
        print(f"--embedding-dim {args.embedding_dim}: the own backward takes hidden sizes "
              f"16-{MAX_HIDDEN}, powers of two", file=sys.stderr)
        return 2
    if cuda_missing():
        return 2
    torch.manual_seed(0)
    rnn = StackedRNN(nn.GRU, args.embedding_dim, args.num_blocks, args.dropout).cuda().train()
    x = recurrence_input(args)
    weight = torch.randn_like(x)             # a loss that reaches every output

    def step(own: bool):
        def run():
            x.grad = None
            rnn.zero_grad(set_to_none=True)
            torch.manual_seed(1)             # the same dropout masks for both backwards
            (run_rnn(rnn, x, own) * weight).sum().backward()
        return run

    names = ["x"] + [n for n, _ in rnn.named_parameters()]
    grads = {}
    for own in (False, True):
        step(own)()
        grads[own] = [x.grad.clone()] + [q.grad.clone() for q in rnn.parameters()]
    diffs = {n: float((a - b).abs().max() / b.abs().max())
             for n, a, b in zip(names, grads[True], grads[False])}
    rows = []
    for own in (False, True):
        s = median_s(step(own), x.device, args.repeats, warmup=3)
        total, top = kernel_ms(step(own), top=6)
        rows.append(dict(backward="own (triton)" if own else "cudnn", step_ms=round(s * 1e3, 4),
                         kernels_ms=round(total, 4), top_kernels=top))
        print(f"{rows[-1]['backward']:12s} {s * 1e3:7.3f} ms a step, kernels {total:.3f} ms",
              flush=True)
    print("gradients, max |own - cudnn| / max |cudnn|: "
          + ", ".join(f"{n} {d:.1e}" for n, d in diffs.items()))
    result = dict(run_facts(args), rows=rows, grad_rel_diff=diffs)
    lines = [f"# GRU forward + backward, cuDNN's backward against the own ({result['device']})",
             "", f"torch {result['torch']}, cuDNN {result['cudnn']}; batch {args.batch_size}, "
             f"L {args.max_len}, D {args.embedding_dim}, {args.num_blocks} one-layer GRUs, "
             f"dropout {args.dropout} between them; median of {args.repeats} eager steps; "
             "kernels: one profiled step.", "",
             "| backward | ms a step (eager) | kernels ms | top kernels (ms, calls) |",
             "|---|---|---|---|"]
    for r in rows:
        top = "; ".join(f"`{name[:60]}` ({ms}, {n})" for name, ms, n in r["top_kernels"][:3])
        lines.append(f"| {r['backward']} | {r['step_ms']} | {r['kernels_ms']} | {top} |")
    lines += ["", "Gradients of the own backward against cuDNN's, max |diff| / max |cuDNN|: "
              + ", ".join(f"{n} {d:.1e}" for n, d in diffs.items())]
    write_report(args.out_dir, "gru_backward", result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
