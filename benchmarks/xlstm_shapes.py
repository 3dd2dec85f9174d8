"""Which xLSTM shapes do the Triton kernels compile and train? One training step (forward,
backward) of the recommender per embedding size × heads × precision, each in a child process:
a compiler that aborts (Triton 3.6.0's LLVM did, on the H200, for xLSTM at D 256 with 2
heads) takes only its child down, and the row records its exit status and last error line.

    python -m benchmarks.xlstm_shapes --out results/benchmarks/xlstm_shapes_h200
    (CPU smoke run: --device cpu --dims 32 --heads 2 --precisions fp32)
-> xlstm_shapes.md, xlstm_shapes.csv
"""
from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from benchmarks import report
from recsys_core.models.xlstm_shapes import QK_DIM_FACTOR, V_DIM_FACTOR

# One step of XLSTMRec on random items: argv = device dim heads blocks max_len precision.
CHILD = """import sys, torch
from recsys_core.models.xlstm import XLSTMRec
device, dim, heads, blocks, length, precision = sys.argv[1:7]
torch.manual_seed(0)
model = XLSTMRec(n_items=3416, embedding_dim=int(dim), num_heads=int(heads),
                 num_blocks=int(blocks), max_len=int(length), device_type=device).to(device)
ids = torch.randint(1, 3417, (8, int(length)), device=device)
with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
    out = model.encode(ids)
out.float().square().mean().backward()
assert torch.isfinite(out.float()).all(), "non-finite output"
print("ok", tuple(out.shape))
"""


def probe(device: str, dim: int, heads: int, blocks: int, length: int, precision: str,
          timeout: float) -> dict:
    start = time.perf_counter()
    try:
        child = subprocess.run([sys.executable, "-c", CHILD, device, str(dim), str(heads),
                                str(blocks), str(length), precision],
                               capture_output=True, text=True, timeout=timeout)
        rc, text = child.returncode, (child.stdout + child.stderr).strip()
    except subprocess.TimeoutExpired:
        rc, text = "timeout", f"no answer in {timeout:.0f} s"
    lines = [line for line in text.splitlines() if line.strip()]
    return dict(device=device, embedding_dim=dim, num_heads=heads,
                qk_head_dim=int(dim * QK_DIM_FACTOR) // heads,
                v_head_dim=int(dim * V_DIM_FACTOR) // heads, precision=precision,
                exit=rc, trains=rc == 0, seconds=round(time.perf_counter() - start, 1),
                last_line=(lines[-1] if lines else "")[:160])


def main(argv: list[str] | None = None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--dims", type=int, nargs="+", default=[64, 128, 256, 512])
    p.add_argument("--heads", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--precisions", nargs="+", default=["bf16"], choices=["bf16", "fp32"])
    p.add_argument("--blocks", type=int, default=1)
    p.add_argument("--max-len", type=int, default=200)
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--jobs", type=int, default=8, help="children at once")
    p.add_argument("--out", type=Path, default=Path("results/benchmarks/xlstm_shapes"))
    args = p.parse_args(argv)
    shapes = list(itertools.product(args.dims, args.heads, args.precisions))
    # The children compile at once (threads only wait on them); rows in the order asked.
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda s: probe(args.device, s[0], s[1], args.blocks,
                                             args.max_len, s[2], args.timeout), shapes))
    for row in rows:
        print(row, flush=True)
    table = pd.DataFrame(rows)
    name = "cpu" if args.device == "cpu" else torch_device_name()
    report.write(args.out, "xlstm_shapes",
                 f"# xLSTM shapes the kernels train ({name})",
                 f"One step (forward, backward) of XLSTMRec, {args.blocks} block(s), max_len "
                 f"{args.max_len}, batch 8, a child process per row (`--jobs` at once): "
                 f"`python -m benchmarks.xlstm_shapes {' '.join(argv or sys.argv[1:])}`. "
                 "qk head dim = D × 0.5 / heads and v head dim = D / heads (xLSTMLarge's factors).",
                 table, data=table)
    return table


def torch_device_name() -> str:
    import torch
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"


if __name__ == "__main__":
    main()
