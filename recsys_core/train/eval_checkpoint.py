"""Evaluate a finished run's best checkpoint again, on any device or number of processes:
`python -m recsys_core.train.eval_checkpoint RUN_DIR [--device cpu|cuda] [--json]`.
Used to check that 1 and N processes, or CPU and GPU, agree on the same weights."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from recsys_core.data import LeaveOneOut, load_dataset
from recsys_core.models import build_model
from recsys_core.train import checkpoint as ckpt
from recsys_core.train.config import TrainConfig
from recsys_core.train.evaluate import evaluate, user_loader
from recsys_core.train.loop import make_accelerator
from recsys_core.train.results import read_result


def evaluate_checkpoint(run_dir: Path, device: str = "auto", eval_batch_size: int | None = None) -> dict:
    record = read_result(run_dir)
    if record is None:
        raise FileNotFoundError(f"{run_dir}/result.json: no result to take the configuration from")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in record.items() if k in fields}
    values["synthetic"] = json.loads(values["synthetic"]) if isinstance(values.get("synthetic"), str) \
        else values.get("synthetic") or {}
    # however many processes this evaluation runs in (WORLD_SIZE is set by accelerate/torchrun)
    values.update(device=device, wandb_mode="disabled",
                  num_processes=int(os.environ.get("WORLD_SIZE", "1")))
    if eval_batch_size:
        values["eval_batch_size"] = eval_batch_size
    cfg = TrainConfig.from_dict(values, f"{run_dir}/result.json")
    accelerator = make_accelerator(cfg)
    data = load_dataset(cfg.dataset, min_user_interactions=cfg.min_user_interactions,
                        mirror=cfg.data_mirror, synthetic=cfg.synthetic or None)
    split = LeaveOneOut.from_data(data, accelerator.device)
    model = build_model(cfg.model, data.n_items, cfg, accelerator.device.type).to(accelerator.device)
    if model.trainable:
        ckpt.load_best(run_dir, model, accelerator.device)
    else:
        model.fit(split.train_item_counts())
    loader = accelerator.prepare(user_loader(data.n_users, cfg.eval_batch_size))
    args = dict(max_len=cfg.max_len, filter_seen=cfg.filter_seen, ks=cfg.ks, loader=loader,
                accelerator=accelerator)
    out = {"num_processes": accelerator.num_processes, "device": str(accelerator.device)}
    out.update(evaluate(model, split, "val", **args))
    out.update(evaluate(model, split, "test", **args))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m recsys_core.train.eval_checkpoint")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--eval-batch-size", type=int, default=None)
    args = p.parse_args(argv)
    metrics = evaluate_checkpoint(args.run_dir, args.device, args.eval_batch_size)
    from accelerate import PartialState
    if PartialState().is_main_process:
        print(json.dumps(metrics, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
