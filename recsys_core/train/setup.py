"""A run's setup, built once: accelerator, data and split, model, optimiser and learning-rate
schedule, training windows, the training step, the evaluation loader. The trainer (loop.py),
checkpoint evaluation (eval_checkpoint.py) and the benchmarks all start from `build_run`."""
from __future__ import annotations

import math
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs

from recsys_core.cli import CELLS_PER_GPU_ENV
from recsys_core.data import LeaveOneOut, load_dataset
from recsys_core.kernel_device import compile_in_background, hash_triton_in_background
from recsys_core.models import build_model
from recsys_core.models.attention_kernels import choose_attention_kernels
from recsys_core.models.fused_layer_norm import fuse_for_run
from recsys_core.train import checkpoint as ckpt
from recsys_core.train.config import ConfigError, TrainConfig
from recsys_core.train.evaluate import evaluate, user_loader
from recsys_core.train.graph_capture import NCCL_ENV_RECORDED, NCCL_GRAPH_ENV
from recsys_core.train.hooks import DebugHooks
from recsys_core.train.optim import Schedule, make_optimizer
from recsys_core.train.precompile import kernels_to_precompile
from recsys_core.train.prepared import Prepared
from recsys_core.train.results import read_result
from recsys_core.train.step_choice import build_train_step, step_kind
from recsys_core.train.step_profile import StepProfile
from recsys_core.train.train_step import TrainStep


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_runtime(cfg: TrainConfig) -> None:
    """What can be known to fail before any work: a device that is not there, an output
    folder that is a file."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is visible here "
                          "(use --device cpu, or auto)")
    if Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        raise ConfigError(f"out={cfg.out}: a file, not a folder for the run's results")


def check_out_is_this_runs(cfg: TrainConfig) -> None:
    """Before a run writes into `out`: it holds no result of another configuration (a
    checkpoint's configuration is checked when it is read: ckpt.resume). Not for the
    evaluation of a finished run, whose process count may differ from its training's."""
    try:
        earlier = read_result(Path(cfg.out)) or {}
    except (ValueError, OSError):   # not a result record: nothing of a run to keep
        earlier = {}
    if earlier.get("config_hash") not in (None, cfg.hash()):
        raise ckpt.OtherRunsFolder(
            f"out={cfg.out}: holds the result of another configuration ({earlier.get('model')} "
            f"on {earlier.get('dataset')}, hash {earlier['config_hash']}; this run "
            f"{cfg.hash()}); use another --out")


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    check_runtime(cfg)
    fresh_accelerate_state()
    if cfg.multi_gpu_graph and cfg.num_processes > 1 and not torch.distributed.is_initialized():
        os.environ.update(NCCL_GRAPH_ENV)     # read when the Accelerator starts the process group
    cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
    precision = cfg.mixed_precision
    if precision == "auto":
        precision = "no" if cpu else "bf16"
    return Accelerator(cpu=cpu, mixed_precision=precision,
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)])


def fresh_accelerate_state() -> None:
    """Accelerate keeps its settings (device, mixed precision) process-wide and refuses an
    Accelerator with other ones: a process that runs one cell after another (jobs/worker.py)
    starts each from none. Not inside `accelerate launch` (the process group is set up once)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return
    from accelerate.state import AcceleratorState, GradientState
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def cells_per_gpu() -> int | None:
    """How many cells may share this process's GPU at once (the local executor's
    --cells-per-gpu, in CELLS_PER_GPU_ENV); None if no launcher said."""
    value = os.environ.get(CELLS_PER_GPU_ENV, "")
    return int(value) if value.isdigit() else None


@dataclass
class Run:
    cfg: TrainConfig
    hooks: DebugHooks
    accelerator: Accelerator
    data: object                         # recsys_core.data.Dataset
    split: LeaveOneOut
    model: torch.nn.Module               # prepared by Accelerate (DDP-wrapped for the eager loop)
    loader: object                       # the evaluation's user loader, sharded per process
    optimizer: torch.optim.Optimizer | None = None      # None: nothing to train (pop, eval)
    schedule: Schedule | None = None
    starts: torch.Tensor | None = None   # the training windows [start, end) of the split
    ends: torch.Tensor | None = None
    train_step: TrainStep | None = None  # None: the eager loop (loop.train_epoch) trains
    profile: StepProfile | None = None   # profile_steps > 0: a few steps under torch.profiler
    state: ckpt.TrainState = field(default_factory=ckpt.TrainState)
    info: dict = field(default_factory=dict)   # what the result records of the setup

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def trainable(self) -> bool:
        return self.optimizer is not None

    @property
    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def evaluate(self, split_name: str) -> dict:
        """Full-ranking metrics of every user on the val or test split."""
        cfg = self.cfg
        metrics = evaluate(self.model, self.split, split_name, max_len=cfg.max_len,
                           filter_seen=cfg.filter_seen, ks=cfg.ks, loader=self.loader,
                           accelerator=self.accelerator)
        if self.accelerator.device.type == "cuda" and (cells_per_gpu() or 1) > 1:
            # What the evaluation's batches took (2,048 users, 16 times a training batch of
            # the study's grids) stays reserved by torch's caching allocator after it, where
            # the other cells' processes cannot have it: in session 19, 5 cells of 5-27 GB
            # peaks held all 140 GB of an H200. Given back, only evaluations at once compete.
            torch.cuda.empty_cache()
        return metrics


def build_run(cfg: TrainConfig, hooks: DebugHooks = DebugHooks(), *,
              accelerator: Accelerator | None = None, train: bool = True,
              resume_dir: Path | None = None, fused_loss: bool = True,
              data=None, split: LeaveOneOut | None = None,
              prepared: Prepared | None = None) -> Run:
    """Everything a run needs before its first epoch. `train=False`: data and model only (no
    optimiser; pop is still fitted). `resume_dir`: continue from its last checkpoint.
    `data`, `split` (on the run's device): already loaded (a benchmark's runs share them);
    `prepared`: the data a process keeps across its runs (prepared.py: a worker's cells)."""
    accelerator = accelerator or make_accelerator(cfg)
    device = accelerator.device
    hashing = hash_triton_in_background() if device.type == "cuda" else None
    if prepared is not None and data is None:
        data, split = prepared.data(cfg, device)
    seed_everything(cfg.seed)
    if data is None:
        data = load_dataset(cfg.dataset, min_user_interactions=cfg.min_user_interactions,
                            mirror=cfg.data_mirror, synthetic=cfg.synthetic or None)
    split = split if split is not None else LeaveOneOut.from_data(data, device)
    model = build_model(cfg.model, data.n_items, cfg, device.type).to(device)
    fused_norms = fuse_for_run(cfg, model, device.type) if cfg.fused_layer_norm else None
    loader = user_loader(data.n_users, cfg.eval_batch_size, accelerator)
    run = Run(cfg, hooks, accelerator, data, split, model, loader)
    run.info.update(dataset_users=data.n_users, dataset_items=data.n_items,
                    dataset_interactions=data.n_interactions,
                    **{f"params_{k}": v for k, v in model.param_counts().items()})
    if fused_norms:
        run.info["layer_norm_kernels"] = fused_norms
    if getattr(model, "mamba_backend", None):     # which Mamba kernels ran (models/ssm.py)
        run.info["mamba_backend"] = model.mamba_backend
    if getattr(model, "gru_backward", None):      # whose GRU backward (models/gru_backward.py)
        run.info["gru_backward"] = model.gru_backward
    attention = choose_attention_kernels(model, device.type)
    if attention:                                 # models/attention_kernels.py
        run.info["attention_kernels"] = attention
    if not model.trainable:
        model.fit(split.train_item_counts())
        return run
    kind = step_kind(cfg, accelerator, hooks) if train else None
    if device.type == "cuda":       # its kernels compile while the optimiser imports dynamo
        jobs = kernels_to_precompile(cfg, model, split, accelerator.mixed_precision,
                                     fixed_step=kind is not None, fused_loss=fused_loss)
        if jobs:
            run.info["triton_precompile"] = compile_in_background(jobs, device, hashing).summary
    if not train:
        return run
    lr = cfg.lr * (accelerator.num_processes if cfg.lr_scale_with_processes else 1)
    graphs = kind == "graph"
    # a capturable optimiser (step count and learning rate on the device) where a graph runs
    optimizer = make_optimizer(cfg, model, lr, capturable=graphs)
    if kind is not None and accelerator.num_processes > 1:
        # The fixed-shape step averages the gradients itself (grad_sync.py): no DDP wrapper.
        # Its reducer holds every parameter's AccumulateGrad node, bound to the stream DDP was
        # built on (here the default stream); a backward captured on another stream then makes
        # that stream wait, which invalidates the capture: the likely cause of the failed
        # capture on 2 x H200 (results/benchmarks/scaling/scaling.md).
        run.model = accelerator.prepare_model(model, evaluation_mode=True)
        run.optimizer = accelerator.prepare_optimizer(optimizer)
    else:
        run.model, run.optimizer = accelerator.prepare(model, optimizer)
    if accelerator.num_processes > 1:    # the settings its process group started with
        run.info["nccl_env"] = {k: os.environ.get(k) for k in NCCL_ENV_RECORDED}
    run.starts, run.ends = prepared.windows(cfg, split) if prepared is not None else \
        split.train_windows(cfg.max_len, cfg.train_windows)
    steps_per_epoch = math.ceil(len(run.starts) // accelerator.num_processes / cfg.batch_size)
    run.schedule = Schedule(cfg, run.optimizer, steps_per_epoch)
    if resume_dir is not None:
        run.state, unreadable = ckpt.resume(resume_dir, cfg, accelerator, run.model,
                                            run.optimizer, run.schedule)
        if unreadable:
            run.info["checkpoint_unreadable"] = unreadable
            if accelerator.is_main_process:
                print(f"warning: {unreadable}", file=sys.stderr, flush=True)
    run.train_step = build_train_step(cfg, hooks, run.model, run.optimizer, accelerator, split,
                                      run.starts, run.ends, fused_loss=fused_loss)
    if cfg.profile_steps:
        run.profile = StepProfile(cfg.profile_steps, accelerator.process_index, device, cfg.out)
    run.info.update(lr_effective=lr, train_step="cuda_graph" if graphs else "eager",
                    resumed_from_epoch=run.state.epoch or None)
    if run.train_step is None and cfg.compile_encoder:
        run.info["train_step"] += " (compile_encoder applies to the fixed-shape step only)"
    return run
