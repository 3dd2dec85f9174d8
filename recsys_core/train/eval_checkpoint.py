"""Evaluate a finished run's best checkpoint again, on any device or number of processes:
`python -m recsys_core.train.eval_checkpoint RUN_DIR [--device cpu|cuda] [--json]`.
Used to check that 1 and N processes, or CPU and GPU, agree on the same weights."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from recsys_core.cli import close_process_group, exit_cli
from recsys_core.train import checkpoint as ckpt
from recsys_core.train.config import TrainConfig
from recsys_core.train.results import read_result
from recsys_core.train.setup import Run, build_run


def config_from_record(record: dict, source: str = "result.json", **overrides) -> TrainConfig:
    """The TrainConfig a result was trained with (nested values are stored as JSON text; the
    record's `device` holds the device's name, so it is reset unless given)."""
    values = {k: v for k, v in record.items() if k in TrainConfig.model_fields}
    for k in ("synthetic", "ks"):
        if isinstance(values.get(k), str):
            values[k] = json.loads(values[k])
    values.update({"device": "auto", "wandb_mode": "disabled", **overrides})
    return TrainConfig.from_dict(values, source)


def restore(run_dir: Path, cfg: TrainConfig, accelerator=None) -> Run:
    """A finished run with its best checkpoint's weights (pop: refitted), in eval mode."""
    run = build_run(cfg, accelerator=accelerator, train=False)
    if run.model.trainable:
        ckpt.load_best(run_dir, run.model, run.accelerator.device)
    run.model.eval()
    return run


def evaluate_checkpoint(run_dir: Path, device: str = "auto", eval_batch_size: int | None = None) -> dict:
    record = read_result(run_dir)
    if record is None:
        raise FileNotFoundError(f"{run_dir}/result.json: no result to take the configuration from")
    # however many processes this evaluation runs in (WORLD_SIZE is set by accelerate/torchrun)
    overrides = {"device": device, "num_processes": int(os.environ.get("WORLD_SIZE", "1"))}
    if eval_batch_size:
        overrides["eval_batch_size"] = eval_batch_size
    run = restore(run_dir, config_from_record(record, f"{run_dir}/result.json", **overrides))
    out = {"num_processes": run.accelerator.num_processes, "device": str(run.accelerator.device)}
    out.update(run.evaluate("val"))
    out.update(run.evaluate("test"))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m recsys_core.train.eval_checkpoint")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--eval-batch-size", type=int, default=None)
    args = p.parse_args(argv)
    try:
        try:
            metrics = evaluate_checkpoint(args.run_dir, args.device, args.eval_batch_size)
        except (FileNotFoundError, ValueError) as e:   # no result; weights missing or unreadable
            print(f"error: {e}", file=sys.stderr)
            return 2
        from accelerate import PartialState
        if PartialState().is_main_process:
            print(json.dumps(metrics, sort_keys=True))
    finally:
        close_process_group()
    return 0


if __name__ == "__main__":
    exit_cli(main())
