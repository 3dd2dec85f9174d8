"""GRU4Rec's and LSTM's recurrence with the batch's rows split over CUDA streams: measured,
and refuted (results/benchmarks/rnn_streams/).

The recurrence is most of GRU4Rec's training step on a GPU (0.111 of its 0.170 s an epoch at the
ML-1M shape on an H200, below) and looked latency-bound: at batch 128 and D 64 each time step's
kernels use a few of the GPU's SMs. The idea: k chunks of the rows, each on its own stream,
run their time steps side by side (rows are independent; autograd runs each backward op on
its forward op's stream, and a CUDA graph keeps the streams' fork and join).
On one H200 every split was slower, eager and graphed, 2 and 4 streams, one fused cuDNN call
or a call per layer: GRU graphed 1.73 → 1.92 (2) → 2.82 ms (4) a step; GRU4Rec's whole epoch
0.170 → 0.204 s. The chunks do not overlap: cuDNN's RNN calls take the device's one dropout
state behind a lock whose CUDA event orders each call after the one before it, and a chunk
of 64 rows costs as much as 128 (latency, not work). So the trainer keeps one call.

This times forward + backward of the recurrence as the models run it (fp32, TF32 allowed, 2
layers, dropout 0.2 between them), for `cudnn` (one multi-layer cuDNN call, cuDNN's dropout:
`rnn_dropout: cudnn`) and `stacked` (a call per layer, torch's dropout: `rnn_dropout: torch`),
eager and as a captured CUDA graph, 1, 2 and 4 streams, and checks that the split gives the
unsplit outputs and gradients (dropout 0).

    python -m benchmarks.rnn_streams --out-dir results/benchmarks/rnn_streams
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from torch import nn

from benchmarks.report import write
from benchmarks.rnn_precision import cuda_missing, rnn_parser
from benchmarks.timing import median_s
from recsys_core.models.gru4rec import StackedRNN

_side_streams: dict[int, torch.cuda.Stream] = {}


def side_stream(i: int) -> torch.cuda.Stream:
    """The i-th extra stream, made once: a CUDA graph's capture must see the streams its
    warm-up used."""
    if i not in _side_streams:
        _side_streams[i] = torch.cuda.Stream()
    return _side_streams[i]


def on_row_streams(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                   streams: int) -> torch.Tensor:
    """fn(x) for a row-wise `fn`, as fn of `streams` chunks of x's rows, each on its own stream
    (the first on the current one), concatenated."""
    chunks = x.chunk(min(streams, x.shape[0]))
    if len(chunks) == 1:
        return fn(x)
    main = torch.cuda.current_stream()
    outs = [fn(chunks[0])]
    for i, chunk in enumerate(chunks[1:], 1):
        side_stream(i).wait_stream(main)            # x is ready before the side stream reads it
        with torch.cuda.stream(side_stream(i)):
            out = fn(chunk)
        # the caching allocator must not reuse x's memory, nor hand the output's to the main
        # stream, before the other stream is done with it
        chunk.record_stream(side_stream(i))
        out.record_stream(main)
        outs.append(out)
    for i in range(1, len(chunks)):
        main.wait_stream(side_stream(i))
    return torch.cat(outs)


def make_rnn(cell: type[nn.RNNBase], layout: str, size: int, layers: int,
             dropout: float) -> nn.Module:
    if layout == "stacked":
        return StackedRNN(cell, size, layers, dropout)
    return cell(size, size, num_layers=layers, batch_first=True, dropout=dropout)


def step_fn(rnn: nn.Module, x: torch.Tensor, streams: int):
    def step():
        rnn.zero_grad(set_to_none=True)
        out = on_row_streams(lambda rows: rnn(rows)[0], x, streams)
        out.sum().backward()
    return step


def graphed(step):
    """step captured as one CUDA graph (warm-up on a side stream first, as torch advises)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def agreement(cell, layout: str, args, streams: int) -> tuple[float, float]:
    """(max |Δ output|, relative |Δ weight gradients|) of `streams` against one, dropout 0."""
    torch.manual_seed(1)
    rnn = make_rnn(cell, layout, args.embedding_dim, args.num_blocks, 0.0).cuda().train()
    x = torch.randn(args.batch_size, args.max_len, args.embedding_dim, device="cuda")
    results = []
    for k in (1, streams):
        rnn.zero_grad(set_to_none=True)
        out = on_row_streams(lambda rows: rnn(rows)[0], x, k)
        out.pow(2).sum().backward()
        grads = torch.cat([p.grad.flatten() for p in rnn.parameters()])
        results.append((out.detach(), grads))
    (o1, g1), (ok, gk) = results
    return float((ok - o1).abs().max()), float((gk - g1).norm() / g1.norm())


def main(argv: list[str] | None = None) -> int:
    p = rnn_parser("python -m benchmarks.rnn_streams", __doc__)
    p.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--out-dir", default=None, help="folder for rnn_streams.{md,csv}")
    args = p.parse_args(argv)
    if cuda_missing():
        return 2
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    rows = []
    # stacked first: a cuDNN call with dropout creates the device's dropout-state event, and
    # from then on every cuDNN RNN call of the process waits on it, with dropout or not.
    for layout in ("stacked", "cudnn"):
        for cell in (nn.GRU, nn.LSTM):
            torch.manual_seed(0)
            rnn = make_rnn(cell, layout, args.embedding_dim, args.num_blocks,
                           args.dropout).cuda().train()
            x = torch.randn(args.batch_size, args.max_len, args.embedding_dim, device="cuda",
                            requires_grad=True)
            for streams in args.streams:
                out_diff, grad_diff = agreement(cell, layout, args, streams)
                for mode in ("eager", "graph"):
                    step = step_fn(rnn, x, streams)
                    error = ""
                    try:
                        run = graphed(step) if mode == "graph" else step
                        s = median_s(run, "cuda", args.repeats, warmup=3)
                    except Exception as e:  # noqa: BLE001 -- a row that says why
                        s, error = float("nan"), f"{type(e).__name__}: {str(e)[:120]}"
                    rows.append(dict(cell=cell.__name__, layout=layout, mode=mode,
                                     streams=streams, step_ms=s * 1e3,
                                     epoch_s=s * args.steps_per_epoch,
                                     max_out_diff=out_diff, grad_rel_diff=grad_diff,
                                     error=error))
                    print(f"{cell.__name__:4s} {layout:7s} {mode:5s} {streams} streams "
                          f"{s * 1e3:7.3f} ms/step {error}", flush=True)
    frame = pd.DataFrame(rows)
    name = torch.cuda.get_device_name()
    text = (f"Device: {name}; torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}. "
            f"Forward + backward of {args.num_blocks} layers, batch {args.batch_size}, L "
            f"{args.max_len}, D {args.embedding_dim}, dropout {args.dropout}, fp32 (TF32); "
            f"median of {args.repeats}; epoch_s = step × {args.steps_per_epoch} steps (ML-1M). "
            "max_out_diff / grad_rel_diff: the split against one stream at dropout 0.")
    if args.out_dir:
        write(Path(args.out_dir), "rnn_streams",
              f"# The recurrence over CUDA streams ({name})", text, frame, data=frame)
    print(text)
    print(frame.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
