"""`python -m recsys_core.train [--config FILE] [--FIELD VALUE ...]`: train and evaluate one
model on one dataset from the command line; a flag for every TrainConfig field."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from recsys_core.cli import ArgumentParser, exit_cli, guarded, print_progress
from recsys_core.data.names import DATASET_NAMES
from recsys_core.models import MODEL_NAMES
from recsys_core.train.config import CHOICES, ConfigError, TrainConfig
from recsys_core.train.hooks import DebugHooks


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m recsys_core.train",
        description="Train and evaluate one model on one dataset; prints one line per epoch "
                    "and the result line, writes OUT/result.json. Models: "
                    + ", ".join(MODEL_NAMES) + ". Datasets: " + ", ".join(DATASET_NAMES) + ".")
    p.add_argument("--config", help="YAML file of TrainConfig keys; flags override it")
    p.add_argument("--quiet", action="store_true", help="print only the result line")
    for name, f in TrainConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        default = f.get_default(call_default_factory=True)
        if isinstance(default, bool):
            p.add_argument(flag, dest=name, default=None, action=argparse.BooleanOptionalAction)
        elif isinstance(default, list):
            p.add_argument(flag, dest=name, default=None, type=int, nargs="+")
        elif isinstance(default, dict):
            p.add_argument(flag, dest=name, default=None, type=json.loads, help="a JSON object")
        else:
            kind = type(default) if default is not None else str
            p.add_argument(flag, dest=name, default=None, type=kind, choices=CHOICES.get(name),
                           help=f"default: {default}")
    for name, f in DebugHooks.model_fields.items():   # for the tests of the failure paths
        p.add_argument("--" + name.replace("_", "-"), dest=name, default=None,
                       type=type(f.default), help=argparse.SUPPRESS)
    return p


def parse_cli(argv: list[str] | None = None) -> tuple[TrainConfig, DebugHooks, bool]:
    """(config, debug hooks, quiet) from the command line; a bad flag exits 2 with one line."""
    args = vars(build_parser().parse_args(argv))
    quiet = args.pop("quiet")
    hooks = {k: v for k in DebugHooks.model_fields if (v := args.pop(k)) is not None}
    values: dict[str, Any] = {}
    source = "command line"
    config_path = args.pop("config")
    if config_path:
        path = Path(config_path)
        source = str(path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"{path}: cannot read YAML: {e}") from e
        except UnicodeDecodeError as e:      # a binary file, or text in another encoding
            raise ConfigError(f"{path}: not a YAML text file (byte {e.start} is not UTF-8)") \
                from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of TrainConfig keys")
        values.update(loaded)
    values.update({k: v for k, v in args.items() if v is not None})
    return (TrainConfig.from_dict(values, source), DebugHooks.from_dict(hooks, "command line"),
            quiet)


def main(argv: list[str] | None = None) -> int:
    from recsys_core.cli import close_process_group
    from recsys_core.train.loop import run
    from recsys_core.train.setup import check_out_is_this_runs, check_runtime
    try:
        cfg, hooks, quiet = parse_cli(argv)
        check_runtime(cfg)
        check_out_is_this_runs(cfg)
    except ConfigError as e:
        print(f"python -m recsys_core.train: error: {e}", file=sys.stderr)
        return 2
    from recsys_core.data import DataError
    try:
        record = run(cfg, progress=None if quiet else print_progress, hooks=hooks)
    except DataError as e:      # a missing or corrupt file: the message says which and what to do
        print(f"python -m recsys_core.train: error: {e}; the run is recorded FAILED in "
              f"{Path(cfg.out) / 'result.json'}", file=sys.stderr)
        return 1
    except ConfigError as e:    # out holds another configuration's checkpoint: left as it is
        print(f"python -m recsys_core.train: error: {e}", file=sys.stderr)
        return 2
    finally:
        close_process_group()
    print(f"{record['status']}: test recall@10 {record.get('test_recall@10')} "
          f"ndcg@10 {record.get('test_ndcg@10')} → {Path(cfg.out) / 'result.json'}", flush=True)
    return 0 if record["status"] == "COMPLETED" else 1


if __name__ == "__main__":
    exit_cli(guarded(main))
