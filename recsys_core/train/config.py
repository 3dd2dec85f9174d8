"""The configuration of one cell: every hyper-parameter, validated once (pydantic), a flag
each on the command line, YAML-loadable.

`TrainConfig` is the single hand-off from the launcher to the trainer: the grid builds one per
cell, the launcher writes it to the cell's cell.json, the job reads it back as it is. Which
fields make a run's identity (its config hash: what resume and results compare) and which only
say where or how it runs is declared here, field by field (`runtime`). Unknown or mistyped
keys are errors that name the source, the key and the valid choices.
"""
from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from recsys_core.data.names import DATASET_NAMES, SYNTHETIC
from recsys_core.metric_names import METRICS
from recsys_core.models import MODEL_NAMES, POSITIONS, RNN_DROPOUTS, SASREC_BLOCKS, shape_problem

CHOICES = {
    "model": tuple(MODEL_NAMES),
    "dataset": tuple(DATASET_NAMES),
    "optimizer": ("adam", "adamw"),
    "scheduler": ("none", "step", "cosine", "onecycle", "plateau"),
    "loss": ("ce", "sampled"),
    "negatives_per": ("batch", "position"),
    "train_windows": ("all", "last"),
    "device": ("auto", "cpu", "cuda"),
    "mixed_precision": ("auto", "no", "bf16"),
    "wandb_mode": ("auto", "offline", "online", "disabled"),
    "positions": POSITIONS,
    "sasrec_block": SASREC_BLOCKS,
    "rnn_dropout": RNN_DROPOUTS,
    "grad_sync": ("flat", "overlap"),
}
POSITIVE = ("max_len", "embedding_dim", "num_heads", "num_blocks", "epochs", "batch_size",
            "eval_batch_size", "num_processes", "ffn_factor", "d_state", "d_conv", "expand")
# The other numbers' ranges: a test of the value, and what the error says it must be.
RANGES = {
    "patience": (lambda v: v >= 0, ">= 0 (0: stop at the first epoch that does not improve)"),
    "step_size": (lambda v: v >= 1, ">= 1 (epochs between StepLR's steps)"),
    "num_negatives": (lambda v: v >= 1, ">= 1"),
    "seed": (lambda v: 0 <= v < 2**32, "in [0, 2**32) (numpy's and torch's seeds)"),
    "min_user_interactions": (lambda v: v >= 3, ">= 3 (leave-one-out needs a training, a "
                                                "validation and a test item)"),
    "ks": (lambda v: len(v) > 0 and all(k >= 1 for k in v), "one or more cut-offs >= 1"),
    "lr": (lambda v: v > 0, "> 0"),
    "dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "mask_prob": (lambda v: 0 < v < 1, "in (0, 1) (BERT4Rec's share of masked items)"),
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "gamma": (lambda v: 0 < v <= 1, "in (0, 1] (the rate's factor at each step)"),
    "grad_clip": (lambda v: v >= 0, ">= 0 (0 = off)"),
}
# W&B's own rule for project names (wandb_settings.validate_project), applied to the entity
# and the group too: a name W&B refuses would fail every cell of a sweep after training.
WANDB_FORBIDDEN = set("/\\#?%:")
WANDB_NAMES = ("wandb_project", "wandb_entity", "wandb_group")
_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


class ConfigError(ValueError):
    pass


def runtime(default: Any, column: bool = False) -> Any:
    """A field that says where or how a run goes, not what is trained: outside the config
    hash. `column`: still a column of the aggregate's tables when a grid varies it (speed)."""
    return Field(default, json_schema_extra={"identity": False, "column": column})


def added_later(default: Any) -> Any:
    """A field added after runs existed: at its default it is left out of the config hash,
    so those runs keep their identity (resume, result hashes)."""
    return Field(default, json_schema_extra={"added_later": True})


def _flag(key: str, extra: str) -> bool:
    schema = TrainConfig.model_fields[key].json_schema_extra or {}
    return bool(schema.get(extra, extra != "added_later"))


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, protected_namespaces=())

    model: str = "sasrec"
    dataset: str = "ml-100k"
    out: str = runtime("runs/default")
    # model shape
    max_len: int = 50
    embedding_dim: int = 64
    num_heads: int = 2
    num_blocks: int = 2
    dropout: float = 0.2
    mask_prob: float = 0.2            # bert4rec
    init_std: float = added_later(0.0)   # item embeddings ~ N(0, init_std²); 0 = N(0, 1/D)
    ffn_factor: int = added_later(4)     # feed-forward width = ffn_factor x D (Transformers, Mamba)
    positions: str = added_later("from_end")   # position ids from the last item or the first
    sasrec_block: str = added_later("pre_ln")  # or original (the SASRec paper's: models/sasrec.py)
    d_state: int = added_later(32)    # Mamba layers (mamba4rec, sasmamba): SSM state size N
    d_conv: int = added_later(4)      # their causal convolution's width
    expand: int = added_later(2)      # their inner width = expand x D
    # GRU4Rec/LSTM between stacked layers: cuDNN's own dropout (one fused call) or torch's
    # (a call per layer), which a resume on the GPU repeats bitwise (models/gru4rec.py)
    rnn_dropout: str = added_later("cudnn")
    # optimisation
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    scheduler: str = "none"
    step_size: int = 5                # StepLR
    gamma: float = 0.5                # StepLR / plateau factor
    # linear warm-up of the learning rate over this many optimiser steps (0 = none): what a
    # deep post-norm Transformer needs to leave the popularity plateau (results/study RQ2)
    warmup_steps: int = added_later(0)
    grad_clip: float = 1.0            # 0 = off
    loss: str = "ce"
    num_negatives: int = 256          # loss=sampled
    # loss=sampled: num_negatives shared by the whole batch, or drawn anew for every position
    # (RecTools' sampler, which the eSASRec benchmark's SASRec+SS trained with)
    negatives_per: str = added_later("batch")
    train_windows: str = "all"
    num_processes: int = 1            # data-parallel processes (GPUs); >1 runs under accelerate launch
    lr_scale_with_processes: bool = False   # multiply lr by the number of processes (global batch rule)
    # evaluation and early stopping
    patience: int = 3
    # early stopping and best epoch: val_<metric>@<k>; auto = val_recall@10
    monitor: str = added_later("auto")
    ks: list[int] = Field(default_factory=lambda: [5, 10, 20])
    filter_seen: bool = True
    eval_batch_size: int = Field(1024, json_schema_extra={"column": False})   # speed only
    # data
    seed: int = 42
    min_user_interactions: int = 5
    data_mirror: str | None = runtime(None)
    synthetic: dict[str, Any] = Field(default_factory=dict)   # SyntheticSpec overrides for synthetic*
    # runtime and tracking
    device: str = runtime("auto")
    mixed_precision: str = "auto"     # auto = bf16 on CUDA, no on CPU
    cuda_graphs: bool = runtime(True, column=True)   # one GPU: the training step as a CUDA graph
    compile_encoder: bool = runtime(False, column=True)   # torch.compile the encoder in that step
    # every LayerNorm of the model as two Triton kernels (models/fused_layer_norm.py; CUDA only)
    fused_layer_norm: bool = runtime(False, column=True)
    # several GPUs (train/grad_sync.py): one all-reduce of all gradients after the backward
    # (flat), or bucketed ones launched during it (overlap); and whether the step with its NCCL
    # all-reduces is captured in a CUDA graph too (a capture that fails runs it eagerly)
    grad_sync: str = runtime("flat", column=True)
    grad_bucket_mb: float = runtime(25.0)
    multi_gpu_graph: bool = runtime(False, column=True)
    profile_steps: int = runtime(0)     # torch.profiler over this many steps of process 0
    # checkpoint files at most this often (0: after every epoch); the last epoch is kept in
    # memory and written anyway when the run fails, is interrupted, stops or ends
    # (checkpoint.Writer)
    checkpoint_every_s: float = runtime(30.0)
    wandb_mode: str = runtime("auto")   # auto = online with WANDB_API_KEY, else offline
    wandb_project: str = runtime("recsys-xlstm")
    wandb_entity: str | None = runtime(None)
    wandb_group: str | None = runtime(None)   # the sweep name
    run_id: str | None = runtime(None)        # the cell id; default: the config hash
    tensorboard: bool = runtime(False)

    @model_validator(mode="before")
    @classmethod
    def _words_for_flags(cls, values: Any) -> Any:
        """true/false, yes/no, 1/0 written as strings (JSON, the environment) for a flag."""
        if isinstance(values, dict):
            for k, v in values.items():
                if isinstance(v, str) and k in cls.model_fields and \
                        cls.model_fields[k].annotation is bool and v.lower() in _WORDS:
                    values = {**values, k: _WORDS[v.lower()]}
        return values

    def __init__(self, **values: Any):
        try:
            super().__init__(**values)
        except ValidationError as e:
            raise ConfigError(_explain(e)) from None

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        for name in TrainConfig.model_fields:
            problem = _field_problem(name, getattr(self, name))
            if problem:
                raise ConfigError(problem)
        if self.synthetic:      # checked here, not when the data is made in the job
            if self.dataset not in SYNTHETIC:
                raise ConfigError(f"synthetic options with dataset={self.dataset!r}: only "
                                  f"{', '.join(SYNTHETIC)} take them")
            from recsys_core.data.synthetic import spec_problem
            problem = spec_problem(self.synthetic)
            if problem:
                raise ConfigError(f"synthetic: {problem}")
        problem = shape_problem(self.model, self.embedding_dim, self.num_heads)
        if problem:
            raise ConfigError(problem)
        if self.scheduler == "plateau" and self.gamma >= 1:
            raise ConfigError(f"gamma={self.gamma} with scheduler='plateau': the rate's factor on "
                              "a plateau must be < 1")
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps={self.warmup_steps}: expected 0 (none) or more")
        if self.warmup_steps and self.scheduler in ("onecycle", "cosine"):
            raise ConfigError(f"warmup_steps with scheduler={self.scheduler!r}: OneCycle warms "
                              "up itself and cosine recomputes from the rate warm-up changes; "
                              "warm-up goes with none, step or plateau")
        self.ks = sorted(set(self.ks))
        valid = ["auto"] + [f"val_{m}@{k}" for m in METRICS for k in self.ks]
        if self.monitor not in valid:
            raise ConfigError(f"monitor={self.monitor!r}; valid: {', '.join(valid)}")
        return self

    @property
    def monitored(self) -> str:
        """The validation metric that early stopping and the best epoch follow."""
        if self.monitor != "auto":
            return self.monitor
        return "val_recall@10" if 10 in self.ks else f"val_recall@{self.ks[0]}"

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def hash(self) -> str:
        """Identity of what is trained: the fields not declared `runtime`."""
        items = {k: v for k, v in self.to_dict().items() if _flag(k, "identity")
                 and not (_flag(k, "added_later") and v == TrainConfig.model_fields[k].default)}
        return hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> "TrainConfig":
        """A config from plain values (YAML, JSON, a grid cell); errors name `source`."""
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: expected a mapping of TrainConfig keys")
        try:
            return cls(**values)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def check_value(cls, key: str, value: Any) -> Any:
        """One field's value checked on its own and normalised (a grid's axis value)."""
        if key not in cls.model_fields:
            raise ConfigError(f"unknown key(s) {key}; valid: {', '.join(cls.model_fields)}")
        try:
            value = _adapter(key).validate_python(value)
        except ValidationError as e:
            raise ConfigError(_explain(e, key)) from None
        problem = _field_problem(key, value)
        if problem:
            raise ConfigError(problem)
        return value


def _field_problem(name: str, value: Any) -> str | None:
    """What is wrong with one field's value on its own (a type already checked), or None."""
    if name in CHOICES and value not in CHOICES[name]:
        return f"{name}={value!r}; valid: {', '.join(CHOICES[name])}"
    if name in POSITIVE and value < 1:
        return f"{name} must be >= 1, got {value}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{name} must be a finite number, got {value}"
    if name in RANGES and not RANGES[name][0](value):
        return f"{name} must be {RANGES[name][1]}, got {value}"
    if name == "grad_bucket_mb" and value <= 0:
        return f"grad_bucket_mb must be > 0, got {value}"
    if name == "checkpoint_every_s" and value < 0:
        return f"checkpoint_every_s must be >= 0 (0 = after every epoch), got {value}"
    if name == "profile_steps" and value < 0:
        return f"profile_steps must be >= 0 (0 = no profile), got {value}"
    if name == "init_std" and value < 0:
        return f"init_std must be >= 0 (0 = N(0, 1/D)), got {value}"
    if name in WANDB_NAMES and value is not None:
        bad = sorted(set(value) & WANDB_FORBIDDEN)
        if not value.strip() or len(value) > 128 or bad:
            return (f"{name}={value!r}: a W&B name is 1-128 characters without "
                    + " ".join(sorted(WANDB_FORBIDDEN)) + (f" (found {' '.join(bad)})" if bad else ""))
    return None


def identity_keys() -> tuple[str, ...]:
    return tuple(k for k in TrainConfig.model_fields if _flag(k, "identity"))


def column_keys() -> tuple[str, ...]:
    """Fields that are configuration for the aggregate's tables (when a grid varies them)."""
    return tuple(k for k in TrainConfig.model_fields if _flag(k, "column"))


def defaults() -> dict[str, Any]:
    return TrainConfig().to_dict()


_ADAPTERS: dict[str, TypeAdapter] = {}


def _adapter(key: str) -> TypeAdapter:
    if key not in _ADAPTERS:
        _ADAPTERS[key] = TypeAdapter(TrainConfig.model_fields[key].annotation,
                                     config=ConfigDict(strict=True))
    return _ADAPTERS[key]


def _type_name(key: str) -> str:
    kind = TrainConfig.model_fields[key].annotation
    return kind.__name__ if isinstance(kind, type) else str(kind).replace("typing.", "")


def _explain(error: ValidationError, key: str | None = None) -> str:
    """pydantic's errors in this project's words: the key, the value, what was expected."""
    errors = error.errors()
    unknown = [str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden"]
    if unknown:
        return (f"unknown key(s) {', '.join(sorted(unknown))}; "
                f"valid: {', '.join(TrainConfig.model_fields)}")
    first = errors[0]
    if isinstance(first.get("ctx", {}).get("error"), ConfigError):
        return str(first["ctx"]["error"])
    loc = ((key,) if key else ()) + tuple(first["loc"])
    name, kind = str(loc[0]), _type_name(str(loc[0]))
    if len(loc) == 1:
        return f"{name}={first['input']!r} should be of type {kind}"
    return f"{name}: {first['input']!r} at [{']['.join(map(str, loc[1:]))}] should be of type {kind}"
