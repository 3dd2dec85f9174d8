"""Where a result came from: the config, its hash, library versions, the code's git SHA, the
machine and the SLURM job. The first fields of every result record."""
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


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_sha() -> str | None:
    """The commit of the checkout this code runs from; None outside a git checkout."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                              capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(cfg, accelerator) -> dict:
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
