"""What the project's Triton kernels cost a cell's process on an empty Triton cache, and on a
full one: the fused loss (train/fused_ce.py) and the evaluation's rank counts (rank_counts.py),
each called twice at the Amazon Beauty cell's shape, in a fresh process.

    python -m benchmarks.triton_cold [--repeat 2] [--out results/benchmarks/triton_cold] [--name N]

Per row (one fresh process): `cache` empty (a new TRITON_CACHE_DIR) or full (the one the
empty row before it filled); the seconds of Triton's cache key, of each kernel's first call
(compile or load, and launch) and second call (launch alone), and of `import torch._dynamo`,
which a cell's setup pays too. A cold cell pays the empty row's first calls where a warm one
pays the full row's. `empty, precompiled` (another new cache): as a GPU cell's setup does it
now (train/precompile.py), the key and both kernels are compiled in threads while this one
imports dynamo, then the kernels are called. `total_s`: this thread's seconds for all of it,
the key and the import included; `*_variants`: the kernels Triton then holds for each (1: the
first call found the precompiled one); `precompile_s`: the compile thread's own seconds.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from functools import partial
from pathlib import Path

import pandas as pd

from benchmarks.report import fresh_process_row, write

ITEMS = 54543          # Amazon Beauty's items + padding
ROWS = 6400            # a training step's scored positions (batch 128 x L 50)
EVAL_USERS = 4096      # the evaluation's batch


def measure(cache: str) -> dict:
    """One row, in this (fresh) process whose TRITON_CACHE_DIR the parent set."""
    import time

    import torch
    device = torch.device("cuda")
    torch.zeros(1, device=device)                     # the CUDA context, outside the clock
    from triton.runtime.cache import triton_key

    from recsys_core.rank_counts import rank_counts
    from recsys_core.train.fused_ce import linear_cross_entropy

    def timed(fn) -> float:
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return time.perf_counter() - t

    from recsys_core import rank_counts as rc
    from recsys_core.kernel_device import compile_in_background, hash_triton_in_background
    from recsys_core.train import fused_ce

    start = time.perf_counter()
    row = {"device": torch.cuda.get_device_name(0), "cache": cache}
    compiling = None
    if cache.endswith("precompiled"):
        compiling = compile_in_background(
            {"fused_ce": partial(fused_ce.precompile, ITEMS, ITEMS, torch.bfloat16, torch.long),
             "rank_counts": partial(rc.precompile, ITEMS, ITEMS, torch.bfloat16, torch.long)},
            device, hash_triton_in_background())
        t = time.perf_counter()
        import torch._dynamo  # noqa: F401
        row["dynamo_import_s"] = time.perf_counter() - t
    else:
        triton_key()
        row["triton_key_s"] = time.perf_counter() - start
    hidden = torch.randn(ROWS, 64, device=device, requires_grad=True)
    table = torch.randn(ITEMS, 64, device=device, requires_grad=True)
    targets = torch.randint(1, ITEMS, (ROWS,), device=device)
    scores = torch.randn(EVAL_USERS, ITEMS, device=device, dtype=torch.bfloat16)
    for n in ("first", "second"):
        row[f"fused_loss_{n}_s"] = timed(lambda: linear_cross_entropy(
            hidden, table, None, targets, ITEMS).backward())
    for n in ("first", "second"):
        row[f"rank_counts_{n}_s"] = timed(lambda: rank_counts(scores, targets[:EVAL_USERS],
                                                              ITEMS))
    if compiling is None:
        t = time.perf_counter()
        import torch._dynamo  # noqa: F401
        row["dynamo_import_s"] = time.perf_counter() - t
    row["total_s"] = time.perf_counter() - start
    row["fused_loss_variants"] = variants(fused_ce._ce_kernel())
    row["rank_counts_variants"] = variants(rc._kernel())
    if compiling is not None:
        row["precompile_s"] = compiling.summary["compile_s"]
        row["precompile_failed"] = compiling.summary["failed"]
    return row


def variants(kernel) -> int | None:
    """How many compiled variants Triton holds for a kernel (its per-device caches)."""
    caches = getattr(kernel, "device_caches", None)
    return None if caches is None else sum(len(c[0]) for c in caches.values())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--out", default="results/benchmarks/triton_cold")
    p.add_argument("--name", default="triton_cold", help="the files' name (NAME.md, NAME.csv)")
    p.add_argument("--row", choices=("empty", "full", "empty, precompiled"),
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.row:
        import json
        print(json.dumps(measure(args.row)))
        return 0
    rows = []
    for _ in range(args.repeat):
        os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="triton-cold-")
        rows += [fresh_process_row("benchmarks.triton_cold", "--row", c) for c in ("empty", "full")]
        os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="triton-cold-")
        rows.append(fresh_process_row("benchmarks.triton_cold", "--row", "empty, precompiled"))
    table = pd.DataFrame(rows)
    write(Path(args.out), args.name,
          f"# The project's Triton kernels in a fresh process, on an empty and a full cache\n\n"
          f"`python -m benchmarks.triton_cold --repeat {args.repeat}`: seconds; one fresh "
          "process a row, each `full` row on the cache its `empty` row filled; `empty, "
          "precompiled`: the kernels compiled in a thread beside dynamo's import, as a cell's "
          "setup does (train/precompile.py).", table, data=table)
    print(table.to_string(index=False), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
