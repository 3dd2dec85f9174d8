"""What a result records besides metrics: the config, versions, code and machine; and the
prediction log (top-10 with titles for a few users)."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

from recsys_core.telemetry import GpuTelemetry

PREDICTION_USERS = 5


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_sha() -> str | None:
    """The launcher passes the sweep's code version in RECSYS_GIT_SHA; else ask git."""
    if os.environ.get("RECSYS_GIT_SHA"):
        return os.environ["RECSYS_GIT_SHA"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                              capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def base_record(cfg, accelerator) -> dict:
    record = dict(cfg.to_dict())
    record.update(
        config_hash=cfg.hash(),
        run_id=cfg.run_id or cfg.hash(),
        status=None,
        reason=None,
        cuda_graphs=False,          # true once a training step has run as a CUDA graph
        tracking_mode=None,         # the W&B mode the run got (online, offline), None: none
        tracking_error=None,        # what went wrong with W&B, if anything (the cell goes on)
        num_processes=accelerator.num_processes,
        device=GpuTelemetry.device_name(accelerator.device),
        mixed_precision=accelerator.mixed_precision,
        python_version=platform.python_version(),
        torch_version=torch.__version__,
        xlstm_version=_version("xlstm"),
        mlstm_kernels_version=_version("mlstm_kernels"),
        accelerate_version=_version("accelerate"),
        git_sha=git_sha(),
        hostname=socket.gethostname(),
        slurm_job_id=os.environ.get("SLURM_JOB_ID"),
        started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        command=" ".join(sys.argv),
    )
    return record


@torch.no_grad()
def predictions(model, split, data, cfg, n_users: int = PREDICTION_USERS) -> list[str]:
    """Top-10 test recommendations with titles for the first few users."""
    from recsys_core.metrics import ranks
    model.eval()
    users = torch.arange(min(n_users, split.n_users), device=split.items.device)
    history = split.inputs("test", cfg.max_len, users)
    scores = model.score_next(history).float().clone()
    scores[:, 0] = float("-inf")
    scores = scores[:, : split.n_items + 1]
    seen = split.history("test", users)
    if cfg.filter_seen:
        scores.scatter_(1, seen, float("-inf"))
    targets = split.targets("test", users)
    target_rank, _ = ranks(scores, targets, history=seen if cfg.filter_seen else None)
    top = scores.topk(min(10, split.n_items), dim=1).indices.cpu()
    lines = []
    for row, u in enumerate(users.tolist()):
        recent = [data.titles[i] for i in history[row].tolist() if i][-3:]
        t = int(targets[row])
        lines.append(f"user {int(data.user_raw_ids[u])}: last watched {recent}")
        lines.append(f"  test target: {data.titles[t]} (rank {int(target_rank[row])})")
        for k, i in enumerate(top[row].tolist(), 1):
            mark = "  <- target" if i == t else ""
            lines.append(f"  {k:2d}. {data.titles[i]}{mark}")
    return lines
