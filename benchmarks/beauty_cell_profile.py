"""The Amazon Beauty SASRec cell (the amazon-beauty grid's, seed 42) on the GPU, built as the
trainer builds it: its steady training epoch, its validation of all 40,226 users, and every
kernel of a training step and of one validation under torch.profiler; the validation also as
it ran before session 25 (`before_validation`: two host reads a batch, torch's comparisons and
sums over the [4,096 × 54,543] score block), with the metrics of both compared. Per
precision: `bf16` (the grid's autocast) and `fp32` (mixed_precision "no").

    RECSYS_DATA_MIRROR=<mirror> python -m benchmarks.beauty_cell_profile bf16 \
        > results/benchmarks/rank_counts/beauty_cell_profile_h100.txt

Session 25 (one H100): validation 0.083 s before → 0.065 s, its kernels 71 → 37 ms
(results/benchmarks/rank_counts/README.md)."""
import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.timing import kernel_times, sync, timed
from recsys_core.train import TrainConfig
from recsys_core.train.loop import train_epoch
from recsys_core.train.setup import build_run

CELL = dict(model="sasrec", dataset="amazon-beauty", max_len=50, embedding_dim=64, num_blocks=2,
            num_heads=1, dropout=0.1, batch_size=128, optimizer="adam", lr=1e-3,
            scheduler="none", grad_clip=0.0, epochs=100, patience=10, loss="ce",
            filter_seen=True, ks=[5, 10, 20], eval_batch_size=4096, init_std=0.02,
            sasrec_block="original", positions="from_start", seed=42, wandb_mode="disabled")
DEVICE = "cuda"


def kernels(prof, per, title, limit=80):
    by = kernel_times(prof)
    total = sum(v[0] for v in by.values())
    print(f"== {title}: {total / 1e3 / per:.3f} ms kernel time per unit, "
          f"{sum(v[1] for v in by.values()) / per:.0f} kernels per unit")
    for name, (us, n) in sorted(by.items(), key=lambda kv: -kv[1][0])[:limit]:
        print(f"  {us / 1e3 / per:8.4f} {n / per:6.1f}  {name[:150]}")


def before_validation(r, which="val"):
    """The evaluation as it was before session 25 (two host reads a batch)."""
    from recsys_core.metrics import metrics_from_ranks, ranks
    from recsys_core.train.evaluate import user_loader
    acc, split, cfg = r.accelerator, r.split, r.cfg
    model = acc.unwrap_model(r.model)
    model.eval()
    out = []
    with torch.no_grad():
        for users in acc.prepare(user_loader(split.n_users, cfg.eval_batch_size)):
            users = users.to(split.items.device)
            history = split.inputs(which, cfg.max_len, users)
            with acc.autocast():
                scores = model.score_next(history)
            seen = split.history(which, users)
            rk, nan = ranks(scores, split.targets(which, users), history=seen,
                            n_valid=split.n_items + 1, host_read=True)
            out.append(rk)
    return metrics_from_ranks(torch.cat(out), cfg.ks)


def probe(tag, **over):
    cfg = TrainConfig(**{**CELL, **over, "out": f"/tmp/probe-{tag}"})
    r = build_run(cfg)
    step = r.train_step
    print(f"### {tag}: {step.describe() if step else 'eager'}", flush=True)
    t, _ = timed(lambda: train_epoch(r, 1), DEVICE)
    print(f"epoch 1 (capture) {t:.3f} s")
    tr = [timed(lambda e=e: train_epoch(r, e), DEVICE)[0] for e in range(2, 5)]
    ev = [timed(lambda: r.evaluate("val"), DEVICE)[0] for _ in range(5)]
    print(f"train epoch {statistics.median(tr):.4f} s {['%.4f' % x for x in tr]}")
    print(f"validation {statistics.median(ev):.4f} s {['%.4f' % x for x in ev]}")
    old = [timed(lambda: before_validation(r), DEVICE)[0] for _ in range(5)]
    print(f"validation as before {statistics.median(old):.4f} s {['%.4f' % x for x in old]}")
    a, b = r.evaluate("val"), before_validation(r)
    print("same metrics:", all(a[f"val_{k}"] == v for k, v in b.items()), a["val_recall@10"])
    n = step.steps if step else 315
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
        train_epoch(r, 5)
        sync(DEVICE)
    kernels(p, n, f"{tag} training step ({n} steps)")
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
        t0 = time.perf_counter()
        r.evaluate("val")
        sync(DEVICE)
        wall = time.perf_counter() - t0
    print(f"profiled evaluation wall {wall:.4f} s")
    kernels(p, 1, f"{tag} evaluation", limit=40)
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
    sys.stdout.flush()


if __name__ == "__main__":
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA device")
    for tag in sys.argv[1:] or ["bf16"]:
        if tag not in ("bf16", "fp32"):
            sys.exit(f"{tag!r}: a precision is bf16 or fp32")
        probe(tag, **({"mixed_precision": "no"} if tag == "fp32" else {}))
