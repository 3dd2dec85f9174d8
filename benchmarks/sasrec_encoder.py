"""SASRec's encoder of `original` blocks (the study's) as it ran before session 28 and as it runs
now, at the Amazon Beauty cell's shape (L 50, D 64, 1 head, 2 blocks, dropout 0.1, positions
from the start, batch 128, bf16 autocast on CUDA and CPU), one forward and backward:
- `module attention, position lookup`: before; each block calls its nn.MultiheadAttention with
  the [B·heads, L, L] mask, positions through nn.Embedding;
- `batch-first attention, position lookup`: recsys_core/models/batch_first_attention.py;
- `batch-first attention, position matmul`: models/base.py:position_embeddings too;
- `+ weights cast once`: the linear layers' weights and biases cast to bf16 in one multi-tensor
  copy a step and their gradients back in one (recsys_core/train/cast_once.py).
Per row:
- `ops`, `copies`: the operations it dispatches (views left out), and of them the copies
  (clone, _to_copy, copy_); on a GPU each is a kernel of the CUDA-graph step;
- `embedding_backwards`: nn.Embedding's backwards among them, one operation on the CPU and
  about a dozen kernels on CUDA (a sort and its segments' sums);
- on CUDA also the kernels a profiled step runs, their GPU time, and the step's median GPU time;
- `max_abs_diff`: the encoder's output (eval mode) against the first row's.

    python -m benchmarks.sasrec_encoder --out-dir results/benchmarks/sasrec_encoder

Writes sasrec_encoder.{md,csv}, the device named in each row."""
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
from recsys_core.models.base import position_ids
from recsys_core.models.sasrec import SASRec
from recsys_core.train.cast_once import CastOnce

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


def encode_before(model, ids: torch.Tensor, batch_first: bool) -> torch.Tensor:
    """SASRec.encode of `original` blocks with its positions looked up in nn.Embedding, as
    before session 28; each block's attention through its nn.MultiheadAttention's call on the
    [B·heads, L, L] mask (as before), or batch-first."""
    pos = position_ids(ids, model.pos_emb.num_embeddings, model.positions)
    x = model.embed_items(ids) * model.embedding_dim ** 0.5 + model.pos_emb(pos.int())
    keep = (ids != 0).unsqueeze(-1)
    x = model.emb_dropout(x) * keep
    mask = model.attention_bias(ids, x) if batch_first else model.attention_mask(ids)
    for block in model.blocks:
        if batch_first:
            x = block(x, mask) * keep
            continue
        q = block.attn_norm(x)
        x = q + block.attn(q, x, x, attn_mask=mask, need_weights=False)[0]
        h = block.ffn_norm(x)
        x = (h + block.ffn(h)) * keep
    return model.final_norm(x)


def measure(device: str, items: int, batch: int, heads: int) -> list[dict]:
    torch.manual_seed(0)
    model = SASRec(items, 64, num_heads=heads, num_blocks=2, dropout=0.1, max_len=50,
                   sasrec_block="original", positions="from_start").to(device)
    ids = torch.randint(1, items + 1, (batch, 50))
    ids[:, :20] = 0                                  # left padding, as the trainer's windows
    ids = ids.to(device)
    cast_once = CastOnce(model)
    encoders = {"module attention, position lookup": lambda: encode_before(model, ids, False),
                "batch-first attention, position lookup": lambda: encode_before(model, ids, True),
                "batch-first attention, position matmul": lambda: model.encode(ids),
                "+ weights cast once": lambda: cast_once(ids)}
    with torch.no_grad():
        model.eval()
        reference = encoders["module attention, position lookup"]()
        diffs = {k: float((enc() - reference).abs().max()) for k, enc in encoders.items()}
        model.train()
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({platform.machine()})"
    rows = []
    for variant, encode in encoders.items():
        def step():
            with torch.autocast(device, dtype=torch.bfloat16):
                hidden = encode()
            hidden.float().square().mean().backward()
            model.zero_grad(set_to_none=True)
        step()
        with Dispatched() as seen:
            step()
        row = {"device": name, "variant": variant, "heads": heads, "batch": batch,
               "ops": sum(seen.counts.values()),
               "copies": sum(seen.counts[c] for c in COPIES),
               "embedding_backwards": seen.counts["embedding_dense_backward"],
               "max_abs_diff": diffs[variant]}
        if device == "cuda":
            _, kernels = profiled(step, device)
            row["kernels"] = sum(n for _, n in kernels.values())
            row["kernel_us"] = round(sum(us for us, _ in kernels.values()), 1)
            row["step_ms"] = round(median_s(step, device, repeats=50, warmup=10) * 1e3, 4)
        rows.append(row)
        print(row, flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sasrec_encoder")
    p.add_argument("--out-dir", default="results/benchmarks/sasrec_encoder")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--items", type=int, default=54542, help="Amazon Beauty's (default)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--heads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--name", default="sasrec_encoder")
    args = p.parse_args(argv)
    table = pd.DataFrame([row for heads in args.heads
                          for row in measure(args.device, args.items, args.batch, heads)])
    print(write(Path(args.out_dir), args.name,
                f"# SASRec's encoder, change by change ({time.strftime('%Y-%m-%d')})",
                "`python -m benchmarks.sasrec_encoder " + " ".join(argv or sys.argv[1:]) +
                "`: one encoder forward and backward of 2 `original` blocks under bf16 autocast "
                "(L 50, D 64, positions from the start); `ops`, `copies` and "
                "`embedding_backwards` dispatched, views left out; on CUDA the profiled "
                "step's kernels and their time, and the step's median GPU time.",
                table, data=table), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
