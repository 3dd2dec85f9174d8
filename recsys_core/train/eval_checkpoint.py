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

import torch

from recsys_core.data import LeaveOneOut, load_dataset
from recsys_core.models import build_model
from recsys_core.train import checkpoint as ckpt
from recsys_core.train.config import TrainConfig
from recsys_core.train.evaluate import evaluate, user_loader
from recsys_core.train.loop import make_accelerator
from recsys_core.train.results import read_result


def config_from_record(record: dict, source: str = "result.json", **overrides) -> TrainConfig:
    """The TrainConfig a result was trained with (nested values are stored as JSON text; the
    record's `device` holds the device's name, so it is reset unless given)."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in record.items() if k in fields}
    for k in ("synthetic", "ks"):
        if isinstance(values.get(k), str):
            values[k] = json.loads(values[k])
    values.update({"device": "auto", "wandb_mode": "disabled", **overrides})
    return TrainConfig.from_dict(values, source)


def restore(run_dir: Path, cfg: TrainConfig, device: torch.device):
    """(data, split, model) of a finished run: the best checkpoint's weights (pop: refitted)."""
    data = load_dataset(cfg.dataset, min_user_interactions=cfg.min_user_interactions,
                        mirror=cfg.data_mirror, synthetic=cfg.synthetic or None)
    split = LeaveOneOut.from_data(data, device)
    model = build_model(cfg.model, data.n_items, cfg, device.type).to(device)
    if model.trainable:
        ckpt.load_best(run_dir, model, device)
    else:
        model.fit(split.train_item_counts())
    model.eval()
    return data, split, model


def evaluate_checkpoint(run_dir: Path, device: str = "auto", eval_batch_size: int | None = None) -> dict:
    record = read_result(run_dir)
    if record is None:
        raise FileNotFoundError(f"{run_dir}/result.json: no result to take the configuration from")
    # however many processes this evaluation runs in (WORLD_SIZE is set by accelerate/torchrun)
    overrides = {"device": device, "num_processes": int(os.environ.get("WORLD_SIZE", "1"))}
    if eval_batch_size:
        overrides["eval_batch_size"] = eval_batch_size
    cfg = config_from_record(record, f"{run_dir}/result.json", **overrides)
    accelerator = make_accelerator(cfg)
    data, split, model = restore(run_dir, cfg, accelerator.device)
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
    from recsys_core.train.loop import close_process_group
    try:
        metrics = evaluate_checkpoint(args.run_dir, args.device, args.eval_batch_size)
        from accelerate import PartialState
        if PartialState().is_main_process:
            print(json.dumps(metrics, sort_keys=True))
    finally:
        close_process_group()
    return 0


if __name__ == "__main__":
    from recsys_core.train.loop import exit_cli
    exit_cli(main())
