"""The job callable the launcher submits: runs a cell from its directory, requeues boundedly."""
import os
import json
import subprocess
import sys
import time

import pytest
import submitit

from jobs.train_cell import TrainCell, rendezvous_port
from tests.conftest import REPO


def make_cell(tmp_path, **params):
    cell = tmp_path / "cells" / "abc123"
    cell.mkdir(parents=True)
    config = {"model": "pop", "dataset": "synthetic", "wandb_mode": "disabled",
              "run_id": "abc123", "wandb_group": "t", **params}
    (cell / "cell.json").write_text(json.dumps({
        "id": "abc123", "name": "pop-synthetic", "sweep": "t", "params": {}, "config": config}))
    return cell


def test_cli_runs_a_cell_directory(tmp_path):
    cell = make_cell(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "jobs.train_cell", str(cell)], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((cell / "result.json").read_text())
    assert result["status"] == "COMPLETED" and result["run_id"] == "abc123"
    assert result["wandb_group"] == "t" and result["out"] == str(cell)


def test_a_cells_recorded_times_cover_its_process_up_to_its_result(tmp_path):
    """Start-up (the process's start, from /proc and the boot clock, to run(): the interpreter
    and every import, the trainer's too) and the run's wall time leave nothing out: the
    trainer's imports (about 1 s here) were once in neither."""
    cell = make_cell(tmp_path)
    before = time.time()
    proc = subprocess.run([sys.executable, "-m", "jobs.train_cell", str(cell)], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((cell / "result.json").read_text())
    took = (cell / "result.json").stat().st_mtime - before
    unrecorded = took - result["time_start_s"] - result["wall_time_s"]
    assert -0.02 < unrecorded < 0.3, (took, result["time_start_s"], result["wall_time_s"])


def test_a_process_start_is_when_it_began():
    before = time.time()
    out = subprocess.run([sys.executable, "-c", "import time; now = time.time()\n"
                          "from jobs.timing import process_start; print(process_start(), now)"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    start, now = map(float, out.split())
    assert before - 0.02 < start <= now     # starttime counts whole 10 ms clock ticks


def test_bad_cell_file_is_a_clear_error(tmp_path):
    cell = make_cell(tmp_path, optimizer="sgd")
    proc = subprocess.run([sys.executable, "-m", "jobs.train_cell", str(cell)], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "cell.json" in proc.stderr and "optimizer" in proc.stderr


def test_a_cell_file_without_its_config_is_a_clear_error(tmp_path):
    cell = make_cell(tmp_path)
    (cell / "cell.json").write_text(json.dumps({"id": "abc123", "params": {"model": "pop"}}))
    proc = subprocess.run([sys.executable, "-m", "jobs.train_cell", str(cell)], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "cell.json: cannot read the cell's config" in proc.stderr


def test_requeues_are_bounded(tmp_path):
    cell = make_cell(tmp_path)
    job = TrainCell(str(cell), max_requeues=2)
    for expected in (1, 2):
        again = job.checkpoint()
        assert isinstance(again, submitit.helpers.DelayedSubmission)
        assert json.loads((cell / "requeues.json").read_text())["count"] == expected
    assert job.checkpoint() is None          # the third signal: no more requeues


def test_a_requeued_multi_node_job_never_takes_the_port_of_its_run_before(tmp_path, monkeypatch):
    """Node 0 publishes its rendezvous port in the cell directory. A requeued job keeps its id,
    so the other nodes must wait for this run's port, not take the last run's."""
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    first = rendezvous_port(tmp_path, node_rank=0)
    assert rendezvous_port(tmp_path, node_rank=1) == first
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")              # the same job, requeued
    with pytest.raises(RuntimeError, match="node 0 never published its port"):
        rendezvous_port(tmp_path, node_rank=1, timeout_s=0.6)
    second = rendezvous_port(tmp_path, node_rank=0)
    assert rendezvous_port(tmp_path, node_rank=1) == second


def test_compile_caches_live_in_the_sweep_unless_the_environment_says(tmp_path, monkeypatch):
    from jobs.train_cell import shared_compile_caches
    cell = tmp_path / "sweep" / "cells" / "abc"
    cell.mkdir(parents=True)
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items()
                                        if k not in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")})
    shared_compile_caches(cell)                       # no manifest: not a sweep, left alone
    assert "TRITON_CACHE_DIR" not in os.environ
    (tmp_path / "sweep" / "manifest.json").write_text("{}")
    os.environ["TRITON_CACHE_DIR"] = "/shared/triton"
    shared_compile_caches(cell)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "sweep" / ".cache" / "inductor")
    assert os.environ["TRITON_CACHE_DIR"] == "/shared/triton"   # the user's choice kept
