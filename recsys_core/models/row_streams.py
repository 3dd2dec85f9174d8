"""A function of a batch's rows run on chunks of rows, each chunk on its own CUDA stream.

cuDNN's GRU and LSTM at the study's shapes (batch 128, D 64, L 200) are latency-bound: each
of the 200 time steps is a small matrix product and a few element-wise kernels that leave most
of the GPU idle, and a time step cannot start before the one before it ends. The rows of a
batch are independent, so k chunks of rows on k streams run their time steps side by side.
Autograd runs each backward op on the stream of its forward op, so the backward pass overlaps
too, and a CUDA graph captured around the step keeps the streams' fork and join.

On the CPU the chunks run one after another: the same function of the batch, which is what
the tests can check here (`python -m benchmarks.rnn_streams` measures the GPU).
"""
from __future__ import annotations

from typing import Callable

import torch

_side_streams: dict[tuple[int, int], torch.cuda.Stream] = {}


def side_stream(device: torch.device, i: int) -> torch.cuda.Stream:
    """The i-th extra stream of `device`, made once per process: a new stream per call would
    give a CUDA graph captured later different streams than its warm-up used."""
    key = (device.index if device.index is not None else torch.cuda.current_device(), i)
    if key not in _side_streams:
        _side_streams[key] = torch.cuda.Stream(device=device)
    return _side_streams[key]


def on_row_streams(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                   streams: int) -> torch.Tensor:
    """fn(x) for a row-wise `fn`, as fn of `streams` chunks of x's rows concatenated."""
    streams = min(streams, x.shape[0])
    if streams <= 1:
        return fn(x)
    chunks = x.chunk(streams)
    if not x.is_cuda:
        return torch.cat([fn(chunk) for chunk in chunks])
    main = torch.cuda.current_stream(x.device)
    outs = []
    for i, chunk in enumerate(chunks):
        if i == 0:
            outs.append(fn(chunk))
            continue
        stream = side_stream(x.device, i)
        stream.wait_stream(main)              # x is ready before the side stream reads it
        with torch.cuda.stream(stream):
            out = fn(chunk)
        # The caching allocator must not hand out x's memory to the side stream, nor the
        # chunk's output's to the main stream, before the other stream is done with it.
        chunk.record_stream(stream)
        out.record_stream(main)
        outs.append(out)
    for i in range(1, len(chunks)):
        main.wait_stream(side_stream(x.device, i))
    return torch.cat(outs)
