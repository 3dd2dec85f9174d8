"""The configuration of one cell: every hyper-parameter, a flag each, YAML-loadable.

`TrainConfig` is the single hand-off from the launcher (a cell's resolved parameters) to the
trainer. Unknown or mistyped keys are errors that name the source and the valid choices.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recsys_core.cli import ArgumentParser
from recsys_core.data.names import DATASET_NAMES
from recsys_core.metrics import METRICS
from recsys_core.models import MODEL_NAMES
from recsys_core.models.base import POSITIONS
from recsys_core.models.sasrec import BLOCKS as SASREC_BLOCKS

CHOICES = {
    "model": tuple(MODEL_NAMES),
    "dataset": tuple(DATASET_NAMES),
    "optimizer": ("adam", "adamw"),
    "scheduler": ("none", "step", "cosine", "onecycle", "plateau"),
    "loss": ("ce", "sampled"),
    "train_windows": ("all", "last"),
    "device": ("auto", "cpu", "cuda"),
    "mixed_precision": ("auto", "no", "bf16"),
    "wandb_mode": ("auto", "offline", "online", "disabled"),
    "positions": POSITIONS,
    "sasrec_block": SASREC_BLOCKS,
}


class ConfigError(ValueError):
    pass


# W&B's own rule for project names (wandb_settings.validate_project), applied to the entity
# and the group too: a name W&B refuses would fail every cell of a sweep after training.
WANDB_FORBIDDEN = set("/\\#?%:")
WANDB_NAMES = ("wandb_project", "wandb_entity", "wandb_group")
# Runtime-only options for testing the failure paths: hidden from the users' --help.
TEST_HOOKS = ("inject_fault", "epoch_sleep_s")


@dataclass
class TrainConfig:
    model: str = "sasrec"
    dataset: str = "ml-100k"
    out: str = "runs/default"
    # model shape
    max_len: int = 50
    embedding_dim: int = 64
    num_heads: int = 2
    num_blocks: int = 2
    dropout: float = 0.2
    mask_prob: float = 0.2            # bert4rec
    init_std: float = 0.0             # item embeddings ~ N(0, init_std²); 0 = N(0, 1/D)
    ffn_factor: int = 4               # Transformers' feed-forward width = ffn_factor x D
    positions: str = "from_end"       # SASRec/BERT4Rec position ids: from the last item or the first
    sasrec_block: str = "pre_ln"      # pre_ln, or original (the SASRec paper's block: models/sasrec.py)
    # optimisation
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    scheduler: str = "none"
    step_size: int = 5                # StepLR
    gamma: float = 0.5                # StepLR / plateau factor
    grad_clip: float = 1.0            # 0 = off
    loss: str = "ce"
    num_negatives: int = 256          # loss=sampled
    train_windows: str = "all"
    num_processes: int = 1            # data-parallel processes (GPUs); >1 runs under accelerate launch
    lr_scale_with_processes: bool = False   # multiply lr by the number of processes (global batch rule)
    # evaluation and early stopping
    patience: int = 3
    monitor: str = "auto"             # early stopping and best epoch: val_<metric>@<k>; auto = val_recall@10
    ks: list = field(default_factory=lambda: [5, 10, 20])
    filter_seen: bool = True
    eval_batch_size: int = 1024
    # data
    seed: int = 42
    min_user_interactions: int = 5
    data_mirror: str | None = None
    synthetic: dict = field(default_factory=dict)   # SyntheticSpec overrides for synthetic*
    # runtime and tracking
    device: str = "auto"
    mixed_precision: str = "auto"     # auto = bf16 on CUDA, no on CPU
    cuda_graphs: bool = True          # one GPU, one process: the training step as a CUDA graph
    compile_encoder: bool = False     # torch.compile the encoder inside that step (fewer, fused kernels)
    wandb_mode: str = "auto"          # auto = online with WANDB_API_KEY, else offline
    wandb_project: str = "recsys-xlstm"
    wandb_entity: str | None = None
    wandb_group: str | None = None    # the sweep name
    run_id: str | None = None         # the cell id; default: the config hash
    tensorboard: bool = False
    # testing aids for the failure paths: "raise@E" raises in epoch E, "nan@E" makes epoch E's
    # loss NaN; epoch_sleep_s slows every epoch (to catch a job mid-run)
    inject_fault: str = ""
    epoch_sleep_s: float = 0.0

    def __post_init__(self):
        for name, valid in CHOICES.items():
            if getattr(self, name) not in valid:
                raise ConfigError(f"{name}={getattr(self, name)!r}; valid: {', '.join(valid)}")
        for name in ("max_len", "embedding_dim", "num_heads", "num_blocks", "epochs",
                     "batch_size", "eval_batch_size", "num_processes", "ffn_factor"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.init_std < 0:
            raise ConfigError(f"init_std must be >= 0 (0 = N(0, 1/D)), got {self.init_std}")
        self.ks = sorted({int(k) for k in self.ks})
        valid = ["auto"] + [f"val_{m}@{k}" for m in METRICS for k in self.ks]
        if self.monitor not in valid:
            raise ConfigError(f"monitor={self.monitor!r}; valid: {', '.join(valid)}")
        for name in WANDB_NAMES:
            value = getattr(self, name)
            if value is None:
                continue
            bad = sorted(set(value) & WANDB_FORBIDDEN)
            if not value.strip() or len(value) > 128 or bad:
                raise ConfigError(
                    f"{name}={value!r}: a W&B name is 1-128 characters without "
                    + " ".join(sorted(WANDB_FORBIDDEN)) + (f" (found {' '.join(bad)})" if bad else ""))
        if self.inject_fault and not re.fullmatch(r"(raise|nan)@\d+", self.inject_fault):
            raise ConfigError(f"inject_fault={self.inject_fault!r}; valid: raise@EPOCH, nan@EPOCH")

    @property
    def monitored(self) -> str:
        """The validation metric that early stopping and the best epoch follow."""
        if self.monitor != "auto":
            return self.monitor
        return "val_recall@10" if 10 in self.ks else f"val_recall@{self.ks[0]}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Identity of what is trained: everything but where it is written and how tracked."""
        skip = {"out", "data_mirror", "wandb_mode", "wandb_project", "wandb_entity",
                "wandb_group", "run_id", "tensorboard", "device", "epoch_sleep_s", "inject_fault",
                "cuda_graphs", "compile_encoder"}
        items = {k: v for k, v in self.to_dict().items() if k not in skip}
        for added in ("init_std", "ffn_factor", "positions", "sasrec_block", "monitor"):
            # added later: at their defaults, runs from before keep their identity
            if items[added] == self.__dataclass_fields__[added].default:
                del items[added]
        return hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> "TrainConfig":
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; "
                              f"valid: {', '.join(fields)}")
        clean = {}
        for k, v in values.items():
            clean[k] = _coerce(k, v, fields[k], source)
        try:
            return cls(**clean)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None


def _coerce(key: str, value: Any, f: dataclasses.Field, source: str) -> Any:
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if value is None or default is None:
        return value
    kind = type(default)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
    elif kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif kind in (str, list, dict) and isinstance(value, kind):
        return value
    raise ConfigError(f"{source}: {key}={value!r} should be of type {kind.__name__}")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m recsys_core.train",
        description="Train and evaluate one model on one dataset; prints one line per epoch "
                    "and the result line, writes OUT/result.json. Models: "
                    + ", ".join(MODEL_NAMES) + ". Datasets: " + ", ".join(DATASET_NAMES) + ".")
    p.add_argument("--config", help="YAML file of TrainConfig keys; flags override it")
    p.add_argument("--quiet", action="store_true", help="print only the result line")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if f.name in TEST_HOOKS:      # for the tests of the failure paths, not for users
            p.add_argument(flag, dest=f.name, default=None, type=type(default),
                           help=argparse.SUPPRESS)
        elif isinstance(default, bool):
            p.add_argument(flag, dest=f.name, default=None, action=argparse.BooleanOptionalAction)
        elif isinstance(default, list):
            p.add_argument(flag, dest=f.name, default=None, type=int, nargs="+")
        elif isinstance(default, dict):
            p.add_argument(flag, dest=f.name, default=None, type=json.loads,
                           help="a JSON object")
        else:
            kind = type(default) if default is not None else str
            p.add_argument(flag, dest=f.name, default=None, type=kind,
                           choices=CHOICES.get(f.name), help=f"default: {default}")
    return p


def config_from_args(argv: list[str] | None = None) -> TrainConfig:
    return parse_cli(argv)[0]


def parse_cli(argv: list[str] | None = None) -> tuple[TrainConfig, bool]:
    """(config, quiet) from the command line; a bad flag exits 2 with one line."""
    args = vars(build_parser().parse_args(argv))
    quiet = args.pop("quiet")
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
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of TrainConfig keys")
        values.update(loaded)
    values.update({k: v for k, v in args.items() if v is not None})
    return TrainConfig.from_dict(values, source), quiet
