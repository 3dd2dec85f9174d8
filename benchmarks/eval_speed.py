"""The trainer's full-ranking evaluation alone, at a real dataset's shape: seconds for every
user's validation rank (`recsys_core.train.evaluate`, as each epoch runs it) and for
`recsys_core.metrics.ranks` alone on one batch of scores, the model as built (untrained: the
work does not depend on what the scores are).

Issue 17's Amazon Beauty cell ranks 40,226 users against 54,542 items after every epoch; this
says what that costs on the machine it runs on, and lets two versions of the code be compared
by running each from its own copy (`git archive`) into one --out:

    RECSYS_DATA_MIRROR=<mirror> python -m benchmarks.eval_speed --dataset amazon-beauty \\
        --model sasrec --max-len 50 --label after --out results/benchmarks/eval_speed_cpu

Writes OUT/eval_speed.csv (a row per run, appended) and OUT/eval_speed.md (all rows).
"""
from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import pandas as pd
import torch

from benchmarks.report import write
from benchmarks.run_setup import evaluator, setup_run
from benchmarks.timing import median_s
from recsys_core.data import LeaveOneOut, load_dataset
from recsys_core.metrics import ranks
from recsys_core.telemetry import GpuTelemetry
from recsys_core.train import TrainConfig


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.eval_speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="amazon-beauty")
    p.add_argument("--model", default="sasrec")
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--embedding-dim", type=int, default=64)
    p.add_argument("--eval-batch-size", type=int, default=4096)
    p.add_argument("--mixed-precision", default="auto", help="the trainer's setting (bf16 on a GPU)")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    p.add_argument("--repeats", type=int, default=3, help="timed calls after one warm-up (median)")
    p.add_argument("--label", default="", help="what this run is, e.g. before / after")
    p.add_argument("--work", default="/tmp/eval_speed")
    p.add_argument("--out", type=Path, required=True)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    cfg = TrainConfig(model=args.model, dataset=args.dataset, max_len=args.max_len,
                      embedding_dim=args.embedding_dim, eval_batch_size=args.eval_batch_size,
                      device=args.device, mixed_precision=args.mixed_precision,
                      cuda_graphs=False, wandb_mode="disabled", out=args.work)
    # the data mirror: $RECSYS_DATA_MIRROR, which the loader reads itself
    data = load_dataset(cfg.dataset, min_user_interactions=cfg.min_user_interactions)
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    split = LeaveOneOut.from_data(data, "cpu").to(device)
    run = setup_run(cfg, data, split)
    evaluate = evaluator(run, cfg.eval_batch_size)
    eval_s = median_s(evaluate, device, args.repeats, warmup=1)
    metrics = evaluate()

    # ranks alone, on one batch of the model's own scores (in the dtype evaluation gets them)
    users = torch.arange(min(cfg.eval_batch_size, split.n_users), device=device)
    with torch.no_grad(), run.accelerator.autocast():
        scores = run.model.score_next(split.inputs("val", cfg.max_len, users))
    seen, targets = split.history("val", users), split.targets("val", users)
    ranks_s = median_s(lambda: ranks(scores, targets, history=seen, n_valid=split.n_items + 1),
                       device, args.repeats, warmup=1)
    row = dict(label=args.label, device=GpuTelemetry.device_name(device),
               host=platform.node(), threads=torch.get_num_threads(), dataset=args.dataset,
               model=args.model, users=split.n_users, items=split.n_items,
               eval_batch_size=cfg.eval_batch_size, scores_dtype=str(scores.dtype).split(".")[-1],
               eval_s=eval_s, ranks_batch_s=ranks_s,
               load=os.getloadavg()[0], **{"val_recall@10": metrics["val_recall@10"]})
    print(row, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    csv = args.out / "eval_speed.csv"
    table = pd.concat([pd.read_csv(csv), pd.DataFrame([row])]) if csv.exists() \
        else pd.DataFrame([row])
    write(args.out, "eval_speed",
          "# The trainer's full-ranking evaluation alone (`python -m benchmarks.eval_speed`)",
          "eval_s: every user's validation rank through `evaluate` (median of the timed calls); "
          "ranks_batch_s: `metrics.ranks` on one batch of the model's scores; load: the "
          "1-minute load average at the end (the machine may be shared).",
          table, data=table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
