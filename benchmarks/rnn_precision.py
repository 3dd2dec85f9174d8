"""cuDNN's recurrence alone at the study's ML-1M training shape, in each precision it can run.

GRU4Rec's and LSTM's training step on a GPU is mostly cuDNN's recurrence (profile of one
CUDA-graph epoch, results/benchmarks/gpu_notes.md). This times that part alone — forward and
backward of `num_blocks` layers over [batch, L, D] inputs, as GRU4Rec runs it — under bf16
autocast (what the trainer runs), fp16 autocast, fp32 with TF32 and plain fp32, so that the
cheapest precision for the recurrence is measured, not guessed.

    python -m benchmarks.rnn_precision --out results/benchmarks/rnn_precision.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn

from benchmarks.timing import median_s

PRECISIONS = ("bf16_autocast", "fp16_autocast", "fp32_tf32", "fp32")


def time_step(rnn: nn.RNNBase, x: torch.Tensor, precision: str, repeats: int) -> float:
    """Median seconds of forward + backward of `rnn` on `x` in `precision` (CUDA events)."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = \
        precision == "fp32_tf32"
    dtype = {"bf16_autocast": torch.bfloat16, "fp16_autocast": torch.float16}.get(precision)

    def step():
        rnn.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            out = rnn(x)[0]
        out.float().sum().backward()

    return median_s(step, x.device, repeats, warmup=3)


def rnn_parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """The parser of a benchmark of the recurrence alone: its docstring as the description and
    the shape arguments (rnn_precision, rnn_streams, rnn_bias)."""
    p = argparse.ArgumentParser(prog=prog, description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_arguments(p)
    return p


def cuda_missing() -> bool:
    """True, and says so, where there is no CUDA device: these benchmarks time cuDNN."""
    if torch.cuda.is_available():
        return False
    print("needs a CUDA device", file=sys.stderr)
    return True


def recurrence_input(args) -> torch.Tensor:
    """The recurrence's input at the arguments' shape, on the GPU, requiring a gradient."""
    return torch.randn(args.batch_size, args.max_len, args.embedding_dim, device="cuda",
                       requires_grad=True)


def write_report(out_dir: str | None, name: str, result: dict, lines: list[str]) -> None:
    """NAME.json (the result) and NAME.md (the lines) into out_dir, where one is given."""
    if not out_dir:
        return
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")


def run_facts(args) -> dict:
    """What a result names of its machine and shape."""
    return dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                cudnn=torch.backends.cudnn.version(), shape=vars(args))


def add_shape_arguments(p: argparse.ArgumentParser) -> None:
    """The recurrence's shape (the study's ML-1M cells by default) and the repeats timed."""
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--max-len", type=int, default=200)
    p.add_argument("--embedding-dim", type=int, default=64)
    p.add_argument("--num-blocks", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--steps-per-epoch", type=int, default=64, help="ML-1M shape: 64 steps")
    p.add_argument("--repeats", type=int, default=30)


def main(argv: list[str] | None = None) -> int:
    p = rnn_parser("python -m benchmarks.rnn_precision", __doc__)
    p.add_argument("--out", default=None, help="JSON file for the results")
    args = p.parse_args(argv)
    if cuda_missing():
        return 2
    torch.manual_seed(0)
    x = recurrence_input(args)
    rows = []
    for cell in (nn.GRU, nn.LSTM):
        rnn = cell(args.embedding_dim, args.embedding_dim, num_layers=args.num_blocks,
                   batch_first=True, dropout=args.dropout).cuda().train()
        for precision in PRECISIONS:
            s = time_step(rnn, x, precision, args.repeats)
            rows.append(dict(cell=cell.__name__, precision=precision, step_ms=s * 1e3,
                             epoch_s=s * args.steps_per_epoch))
            print(f"{cell.__name__:4s} {precision:14s} {s * 1e3:7.3f} ms/step "
                  f"= {s * args.steps_per_epoch:.4f} s per {args.steps_per_epoch}-step epoch",
                  flush=True)
    result = dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                  cudnn=torch.backends.cudnn.version(), shape=vars(args), rows=rows)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
