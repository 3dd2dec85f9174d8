"""Launcher performance, measured: `python -m benchmarks.launcher_overhead [--out results/benchmarks]`.

1. Planning a 10,000-cell grid: `sweep GRID --executor dry-run --json > /dev/null`, wall time
   of the whole command (start-up included), median of 5.
2. Submitting 1,000 cells to the SLURM cluster that SLURM_CONF names (slurm/dev-cluster here):
   the number of sbatch calls (counted by a shim first on PATH that logs and runs the real
   sbatch) and the wall time; the jobs are cancelled right away.
3. `status` of those 1,000 cells: the number of sacct calls and the wall time.
Writes launcher.json and launcher.md under --out, with the machine they were measured on.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks.report import write
from benchmarks.timing import timed

REPO = Path(__file__).resolve().parents[1]


def grid_file(folder: Path, n_seeds: int, name: str, gpus: int = 1) -> Path:
    """5 models × 4 datasets × 5 lengths × n_seeds × 10 learning rates (10,000 cells at 10);
    ml-20m cells get other resources, so there are two job arrays."""
    big = {"gpus": 4} if gpus else {"time": "08:00:00"}   # the dev cluster has no GPUs
    body = {
        "name": name,
        "fixed": {"epochs": 1, "device": "cpu", "wandb_mode": "disabled"},
        "grid": {"model": ["xlstm", "sasrec", "bert4rec", "gru4rec", "lstm"], "dataset": ["ml-100k", "ml-1m", "ml-10m", "ml-20m"],
                 "max_len": [32, 64, 128, 200, 256], "seed": list(range(1, n_seeds + 1)),
                 "lr": [round(0.001 * i, 3) for i in range(1, 11)]},
        "resources": {"gpus": gpus, "cpus": 1, "mem": "1G", "time": "04:00:00"},
        "overrides": [{"when": {"dataset": "ml-20m"}, "set": {"resources": big}}],
    }
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps(body))
    return path


def shim(folder: Path, log: Path) -> dict:
    """An env whose PATH starts with sbatch/sacct wrappers that log each call."""
    bin_dir = folder / "shim"
    bin_dir.mkdir()
    for tool in ("sbatch", "sacct"):
        real = shutil.which(tool)
        (bin_dir / tool).write_text(f'#!/bin/sh\necho {tool} >> "{log}"\nexec "{real}" "$@"\n')
        (bin_dir / tool).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def launcher(*args, env=None) -> tuple[float, subprocess.CompletedProcess]:
    """Wall time of the whole `python -m launcher ARGS` command, and its process."""
    elapsed, proc = timed(lambda: subprocess.run([sys.executable, "-m", "launcher", *map(str, args)],
                                                 cwd=REPO, env=env, capture_output=True, text=True))
    if proc.returncode != 0:
        raise RuntimeError(f"launcher {args}: {proc.stderr[-2000:]}")
    return elapsed, proc


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.launcher_overhead")
    p.add_argument("--out", default=str(REPO / "results" / "benchmarks"))
    p.add_argument("--skip-slurm", action="store_true")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="launcher-bench-"))
    report = {"machine": f"{platform.node()}: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
                         f"Python {platform.python_version()}",
              "date": time.strftime("%Y-%m-%d")}

    big = grid_file(work, 10, "plan10k")
    times = []
    for i in range(5):
        t, _ = launcher("sweep", big, "--executor", "dry-run", "--json", "--out", work / f"dry{i}")
        times.append(t)
    report["plan_10000_cells_s"] = {"median": statistics.median(times), "all": times}

    if not args.skip_slurm:
        log = work / "calls.log"
        env = shim(work, log)
        grid = grid_file(work, 1, "submit1k", gpus=0)   # 1,000 cells, 2 resource groups
        sweep = work / "sweep1k"
        t_submit, proc = launcher("sweep", grid, "--executor", "slurm", "--out", sweep, env=env)
        calls = log.read_text().split() if log.exists() else []
        report["submit_1000_cells"] = {"wall_s": t_submit, "sbatch_calls": calls.count("sbatch"),
                                       "output": proc.stdout.strip()}
        log.unlink(missing_ok=True)
        t_status, proc = launcher("status", sweep, "--json", env=env)
        calls = log.read_text().split() if log.exists() else []
        report["status_1000_cells"] = {"wall_s": t_status, "sacct_calls": calls.count("sacct"),
                                       "cells": len(json.loads(proc.stdout))}
        launcher("cancel", sweep)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "launcher.json").write_text(json.dumps(report, indent=1) + "\n")
    figures = [("plan a 10,000-cell grid (dry-run --json, whole command)",
                f"{report['plan_10000_cells_s']['median']:.2f} s (median of 5)")]
    if "submit_1000_cells" in report:
        s, st = report["submit_1000_cells"], report["status_1000_cells"]
        figures += [("submit 1,000 cells (slurm/dev-cluster)",
                     f"{s['sbatch_calls']} sbatch calls, {s['wall_s']:.1f} s"),
                    ("status of 1,000 cells", f"{st['sacct_calls']} sacct call(s), {st['wall_s']:.1f} s")]
    print(write(out, "launcher", f"# Launcher benchmark ({report['date']})",
                f"Machine: {report['machine']}",
                pd.DataFrame(figures, columns=["measurement", "figure"])), end="")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
