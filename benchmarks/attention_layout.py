"""SASRec's `original` block (the study's) with its attention in the batch-first layout
(recsys_core/models/batch_first_attention.py: `attend` and a mask built once a step) against
nn.MultiheadAttention's own call on its [B·heads, L, L] mask, at the Amazon Beauty cell's shape
(L 50, D 64, 1 head, 2 blocks, dropout 0.1, batch 128, bf16 autocast on CUDA and CPU), one
encoder forward and backward:
- `ops`, `copies`: the operations it dispatches (views left out), and of them the copies
  (clone, _to_copy, copy_); on a GPU each is a kernel of the CUDA-graph step;
- on CUDA also the kernels a profiled step runs, their GPU time, and the step's median GPU time;
- `max_abs_diff`: the encoder's output (eval mode) against the module's.

    python -m benchmarks.attention_layout --out-dir results/benchmarks/attention_layout

Writes attention_layout.{md,csv}, the device named in each row."""
import argparse
import collections
import platform
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.report import write
from benchmarks.timing import median_s, profiled

VIEWS = {"view", "_unsafe_view", "reshape", "t", "transpose", "permute", "unsqueeze", "squeeze",
         "expand", "alias", "detach", "select", "slice", "as_strided", "split", "unbind",
         "split_with_sizes", "chunk", "narrow", "view_as", "empty", "empty_like", "empty_strided"}
COPIES = ("clone", "_to_copy", "copy_")


class Dispatched(TorchDispatchMode):
    """Counts the operations dispatched inside it, by name."""

    def __init__(self):
        super().__init__()
        self.counts: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name not in VIEWS:
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))


def module_encode(model, ids: torch.Tensor) -> torch.Tensor:
    """SASRec.encode of `original` blocks as it ran before batch_first_attention: every block
    calls its nn.MultiheadAttention with the [B·heads, L, L] mask."""
    x, mask = model.embed(ids), model.attention_mask(ids)
    keep = (ids != 0).unsqueeze(-1)
    for block in model.blocks:
        q = block.attn_norm(x)
        x = q + block.attn(q, x, x, attn_mask=mask, need_weights=False)[0]
        h = block.ffn_norm(x)
        x = (h + block.ffn(h)) * keep
    return model.final_norm(x)


def measure(device: str, items: int, batch: int, heads: int) -> list[dict]:
    from recsys_core.models.sasrec import SASRec
    torch.manual_seed(0)
    model = SASRec(items, 64, num_heads=heads, num_blocks=2, dropout=0.1, max_len=50,
                   sasrec_block="original", positions="from_start").to(device)
    ids = torch.randint(1, items + 1, (batch, 50))
    ids[:, :20] = 0                                  # left padding, as the trainer's windows
    ids = ids.to(device)
    encoders = {"nn.MultiheadAttention": lambda: module_encode(model, ids),
                "batch_first_attention": lambda: model.encode(ids)}
    with torch.no_grad():
        model.eval()
        reference = encoders["nn.MultiheadAttention"]()
        diffs = {k: float((enc() - reference).abs().max()) for k, enc in encoders.items()}
        model.train()
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({platform.machine()})"
    rows = []
    for layout, encode in encoders.items():
        def step():
            with torch.autocast(device, dtype=torch.bfloat16):
                hidden = encode()
            hidden.float().square().mean().backward()
            model.zero_grad(set_to_none=True)
        step()
        with Dispatched() as seen:
            step()
        row = {"device": name, "layout": layout, "heads": heads, "batch": batch,
               "ops": sum(seen.counts.values()),
               "copies": sum(seen.counts[c] for c in COPIES), "max_abs_diff": diffs[layout]}
        if device == "cuda":
            _, kernels = profiled(step, device)
            row["kernels"] = sum(n for _, n in kernels.values())
            row["kernel_us"] = round(sum(us for us, _ in kernels.values()), 1)
            row["step_ms"] = round(median_s(step, device, repeats=50, warmup=10) * 1e3, 4)
        rows.append(row)
        print(row, flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.attention_layout")
    p.add_argument("--out-dir", default="results/benchmarks/attention_layout")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--items", type=int, default=54542, help="Amazon Beauty's (default)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--heads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--name", default="attention_layout")
    args = p.parse_args(argv)
    table = pd.DataFrame([row for heads in args.heads
                          for row in measure(args.device, args.items, args.batch, heads)])
    print(write(Path(args.out_dir), args.name,
                f"# SASRec's attention, batch-first against nn.MultiheadAttention "
                f"({time.strftime('%Y-%m-%d')})",
                "`python -m benchmarks.attention_layout " + " ".join(argv or sys.argv[1:]) +
                "`: one encoder forward and backward of 2 `original` blocks under bf16 autocast "
                "(L 50, D 64); `ops` and `copies` dispatched, views left out; on CUDA the "
                "profiled step's kernels and their time, and the step's median GPU time.",
                table, data=table), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
