"""Where cuDNN's GRU backward goes at the study's ML-1M shape: its biases and its precision.

Session 24's profile of GRU4Rec's CUDA-graph epoch (one H100, `python -m benchmarks.gpu_epoch
--models gru4rec --modes graph`) put 52.7% of the kernel time in one cuDNN kernel,
`GRU_elementWise_bp2<float, …, cudnnRNNBiasMode_t 2>` (1.04 ms a call, one call a layer a step),
against 0.037 s an epoch for the recurrent kernels themselves. Its template names the double
bias mode and a reduction, so the bias gradients were the suspect. This times forward +
backward of the recurrence alone with and without biases, in fp32 (TF32) and with fp16
weights and inputs, and sums each run's kernels by name under torch.profiler (LSTM beside it).
Session 24 (one H100, results/benchmarks/rnn_bias/): without biases the kernel costs the same,
and its template still says mode 2 (PyTorch asks cuDNN for the double-bias mode either way);
fp16 halves it, but cuDNN's fp16 recurrent kernels take longer and the eager step does not
get faster.

    python -m benchmarks.rnn_bias --out-dir results/benchmarks/rnn_bias
"""
from __future__ import annotations

import sys

import torch
from torch import nn

from benchmarks.rnn_precision import cuda_missing, rnn_parser, run_facts, write_report
from benchmarks.timing import median_s, profiled

VARIANTS = (("fp32_tf32", True), ("fp32_tf32", False), ("fp16", True), ("fp16", False))


def make_step(rnn: nn.RNNBase, x: torch.Tensor):
    def step():
        rnn.zero_grad(set_to_none=True)
        rnn(x)[0].float().sum().backward()
    return step


def kernel_ms(step, top: int = 4) -> tuple[float, list[tuple[str, float, int]]]:
    """One step under torch.profiler, after one unprofiled: all kernels' milliseconds and the
    `top` kernels by time (name cut to 90 characters, ms, calls)."""
    step()
    _, kernels = profiled(step, "cuda")
    ranked = sorted(kernels.items(), key=lambda kv: -kv[1][0])[:top]
    return (sum(us for us, _ in kernels.values()) / 1e3,
            [(name[:90], round(us / 1e3, 4), int(n)) for name, (us, n) in ranked])


def main(argv: list[str] | None = None) -> int:
    p = rnn_parser("python -m benchmarks.rnn_bias", __doc__)
    p.add_argument("--out-dir", default=None, help="rnn_bias.json and rnn_bias.md go here")
    args = p.parse_args(argv)
    if cuda_missing():
        return 2
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    rows = []
    for cell in (nn.GRU, nn.LSTM):
        for precision, bias in VARIANTS:
            torch.manual_seed(0)
            dtype = torch.float16 if precision == "fp16" else torch.float32
            rnn = cell(args.embedding_dim, args.embedding_dim, num_layers=args.num_blocks,
                       batch_first=True, dropout=args.dropout, bias=bias).cuda().to(dtype)
            x = torch.randn(args.batch_size, args.max_len, args.embedding_dim, device="cuda",
                            dtype=dtype, requires_grad=True)
            step = make_step(rnn.train(), x)
            s = median_s(step, x.device, args.repeats, warmup=3)
            total, top = kernel_ms(step)
            rows.append(dict(cell=cell.__name__, precision=precision, bias=bias,
                             step_ms=round(s * 1e3, 4), epoch_s=round(s * args.steps_per_epoch, 4),
                             kernels_ms=round(total, 4), top_kernels=top))
            print(f"{cell.__name__:4s} {precision:9s} bias={bias!s:5s} {s * 1e3:7.3f} ms/step, "
                  f"kernels {total:.3f} ms; top: {top[0][0][:50]} {top[0][1]} ms", flush=True)
    result = dict(run_facts(args), rows=rows)
    lines = [f"# cuDNN recurrence, forward + backward, by bias and precision ({result['device']})",
             "", f"torch {result['torch']}, cuDNN {result['cudnn']}; batch {args.batch_size}, "
             f"L {args.max_len}, D {args.embedding_dim}, {args.num_blocks} layers; median of "
             f"{args.repeats} steps (eager); kernels: one profiled step.", "",
             "| cell | precision | bias | ms a step | s a 64-step epoch | kernels ms | top kernel (ms, calls) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        name, ms, n = r["top_kernels"][0]
        lines.append(f"| {r['cell']} | {r['precision']} | {r['bias']} | {r['step_ms']} | "
                     f"{r['epoch_s']} | {r['kernels_ms']} | `{name}` ({ms}, {n}) |")
    write_report(args.out_dir, "rnn_bias", result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
