"""The launcher CLI without SLURM: dry-run scripts, validation exit codes, multi-process cells
through the local executor (two CPU processes, as a multi-GPU cell runs on GPUs)."""
import json
import subprocess
import sys

from recsys_core.train.eval_checkpoint import evaluate_checkpoint
from tests.conftest import REPO

TINY = {"dataset": "synthetic", "synthetic": {"n_users": 80, "n_items": 40,
                                             "n_interactions": 1600, "seed": 3},
        "max_len": 8, "embedding_dim": 8, "num_heads": 2, "num_blocks": 1, "batch_size": 32,
        "wandb_mode": "disabled", "device": "cpu", "epochs": 2}


def launcher(*args):
    return subprocess.run([sys.executable, "-m", "launcher", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def test_multi_gpu_cell_dry_run_shows_the_per_node_accelerate_launch(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(json.dumps({"name": "big", "fixed": TINY, "grid": {"model": ["sasrec"]},
                                "resources": {"gpus": 4, "nodes": 2, "cpus": 16,
                                              "time": "01:00:00"}}))
    proc = launcher("sweep", grid, "--executor", "dry-run", "--out", tmp_path / "s")
    assert proc.returncode == 0, proc.stderr
    script = (tmp_path / "s" / "sbatch" / "array000.sh").read_text()
    assert script.startswith("#!/bin/bash\n")
    for line in ("#SBATCH --gpus-per-node=4", "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1",
                 "--num_processes 8 --num_machines 2 --machine_rank $SLURM_NODEID"):
        assert line in script, line
    assert not (tmp_path / "s" / "submissions.jsonl").exists()


def test_invalid_grids_exit_2_and_write_nothing(tmp_path):
    for body, needle in [
        ({"name": "x", "grid": {"model": ["sasrec", "transformer9000"]}}, "grid.model[1]"),
        ({"name": "x", "fixed": {**TINY, "num_processes": 3}, "grid": {"model": ["sasrec"]},
          "resources": {"gpus": 2}}, "num_processes=3"),
    ]:
        grid = tmp_path / "bad.yaml"
        grid.write_text(json.dumps(body))
        proc = launcher("sweep", grid, "--executor", "slurm", "--out", tmp_path / "out")
        assert proc.returncode == 2 and str(grid) in proc.stderr and needle in proc.stderr
        assert not (tmp_path / "out").exists()


def test_two_process_cell_runs_through_the_local_executor(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(json.dumps({"name": "ddp", "fixed": {**TINY, "num_processes": 2},
                                "grid": {"model": ["sasrec"]}, "resources": {"cpus": 2}}))
    sweep = tmp_path / "s"
    proc = launcher("sweep", grid, "--executor", "local", "--out", sweep)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (cell,) = (sweep / "cells").iterdir()
    result = json.loads((cell / "result.json").read_text())
    assert result["status"] == "COMPLETED" and result["num_processes"] == 2
    single = evaluate_checkpoint(cell, device="cpu")
    assert all(result[k] == v for k, v in single.items() if k.startswith(("val_", "test_")))
    # status: the table, JSON, and --watch (returns once nothing is queued or running)
    table = launcher("status", sweep)
    assert table.returncode == 0 and "1/1 finished  COMPLETED 1" in table.stdout
    rows = json.loads(launcher("status", sweep, "--json").stdout)
    assert [r["state"] for r in rows] == ["COMPLETED"]
    watch = launcher("status", sweep, "--watch", "0.1")
    assert watch.returncode == 0 and "1/1 finished" in watch.stdout
