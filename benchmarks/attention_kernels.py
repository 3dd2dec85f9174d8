"""What each of torch's attention kernels costs SASRec at the Amazon Beauty cell's shape (54,542
items, L 50, D 64, 1 head, 2 original blocks, bf16 autocast) on the GPU: the first training
step of a fresh process, the steady eager step, and the first evaluation call at three batch
sizes (4,096 users, the last batch of 3,362, then 1,000), the last query alone. One fresh
process per kernel choice (`default`: torch's own; the others forced with `sdpa_kernel`), so
every first call pays what a cell's process pays. Why the trainer leaves cuDNN's kernels out
(recsys_core/models/attention_kernels.py).

    python -m benchmarks.attention_kernels --out-dir results/benchmarks/attention_kernels

Writes attention_kernels.{md,csv}. Session 26, one H100: cuDNN's first call at each new
evaluation shape 0.16-0.20 s, the memory-efficient kernels' 0.03-0.04 s
(results/benchmarks/attention_kernels/README.md)."""
import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from benchmarks.report import fresh_process_row, write
from benchmarks.timing import timed

CHOICES = ("default", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION", "MATH")
EVAL_BATCHES = (4096, 3362, 1000)


def seconds(fn) -> float:
    return timed(fn, "cuda")[0]


def measure(choice: str) -> dict:
    """One kernel choice, in this (fresh) process."""
    from contextlib import nullcontext

    from torch.nn.attention import SDPBackend, sdpa_kernel

    from recsys_core.models.sasrec import SASRec
    dev = torch.device("cuda")
    # the wall clock alone: a sync before the timer would start CUDA itself
    row = {"kernels": choice, "cuda_init_s": timed(lambda: torch.zeros(1, device=dev).cpu())[0]}
    model = SASRec(54542, 64, num_heads=1, num_blocks=2, dropout=0.1, max_len=50,
                   sasrec_block="original", positions="from_start").to(dev)
    scope = (lambda: nullcontext()) if choice == "default" else \
        (lambda: sdpa_kernel([getattr(SDPBackend, choice)]))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 54543, (128, 50), generator=g)
    ids[:, :20] = 0                                   # left padding, as the trainer's windows
    ids = ids.to(dev)

    def step():
        with scope(), torch.autocast("cuda", torch.bfloat16):
            hidden = model.encode(ids)
        hidden.float().sum().backward()
    row["train_first_s"] = seconds(step)
    row["train_second_s"] = seconds(step)
    row["train_steady_ms"] = seconds(lambda: [step() for _ in range(50)]) / 50 * 1e3
    model.eval()
    for b in EVAL_BATCHES:
        batch = torch.randint(1, 54543, (b, 50), generator=g).to(dev)
        with torch.no_grad(), scope(), torch.autocast("cuda", torch.bfloat16):
            row[f"eval_first_{b}_s"] = seconds(lambda: model.encode(batch, last_only=True))
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.attention_kernels")
    p.add_argument("--out-dir", default="results/benchmarks/attention_kernels")
    p.add_argument("--one", choices=CHOICES, help=argparse.SUPPRESS)   # the child's choice
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("attention_kernels: needs a CUDA device", file=sys.stderr)
        return 2
    if args.one:
        print(json.dumps(measure(args.one)))
        return 0
    # the first process also pays the stack's first imports: `default` runs first and last
    table = pd.DataFrame([fresh_process_row("benchmarks.attention_kernels", "--one", choice)
                          for choice in (*CHOICES, "default")])
    table.insert(0, "device", torch.cuda.get_device_name())
    print(write(Path(args.out_dir), "attention_kernels",
                f"# Attention kernels at the Beauty cell's shape ({time.strftime('%Y-%m-%d')})",
                "`python -m benchmarks.attention_kernels`: one fresh process per row, in this "
                "order (the first pays the stack's first imports).", table, data=table), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
