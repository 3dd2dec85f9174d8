"""The worker the launcher starts before it reads its grid (launcher/spare_worker.py): taken
by the first cell where it sees that cell's GPUs (tests/test_worker.py: it runs a whole CPU
sweep with the metrics of a process per cell), left alone and ended where it does not."""
import json
import os
from pathlib import Path
import subprocess
import sys
import time

from launcher.executors.local import visible_gpus
from launcher.spare_worker import first_gpu, wanted
from tests.conftest import REPO
from tests.test_worker import TINY


def spares() -> set[int]:
    found = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if b"jobs.worker\0--spare" in (proc / "cmdline").read_bytes():
                found.add(int(proc.name))
        except OSError:
            pass
    return found


def test_which_commands_start_a_spare():
    assert wanted(["sweep", "g.yaml", "--executor", "local"])
    assert wanted(["resume", "sweeps/g", "--executor=local", "--workers", "2"])
    assert not wanted(["sweep", "g.yaml"])                          # SLURM, the default
    assert not wanted(["sweep", "g.yaml", "--executor", "dry-run"])
    assert not wanted(["sweep", "g.yaml", "--executor", "local", "--process-per-cell"])
    assert not wanted(["sweep", "g.yaml", "--executor", "local", "--mps"])
    assert not wanted(["status", "sweeps/g", "--executor", "local"])
    assert not wanted([])


def test_the_spare_sees_the_gpu_the_pool_gives_first(monkeypatch):
    """Spelled as the launcher's pool spells it: take() compares the two strings."""
    for visible in (" 1, 2", "3", "GPU-5f2a,GPU-77c1", ",4"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        assert first_gpu() == visible_gpus()[0]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert first_gpu() == "" and visible_gpus() == []


def sweep(grid: Path, out: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launcher", "sweep", grid, "--executor", "local",
                           "--out", out], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env})


def gone(before: set[int]) -> bool:
    deadline = time.time() + 30
    while spares() - before and time.time() < deadline:
        time.sleep(0.2)
    return not spares() - before


def test_a_spare_that_sees_other_gpus_is_not_taken_and_ends(tmp_path):
    """The launcher sees a GPU 7 (CUDA_VISIBLE_DEVICES), so its spare does; a cell asking for
    no GPU runs where CUDA_VISIBLE_DEVICES is empty: a worker of its own runs it, and the
    spare is gone once the launcher has ended. So is the spare of a launcher that refused its
    grid."""
    before = spares()
    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps({"name": "bad", "fixed": TINY, "grid": {"seed": [1]}}))
    proc = sweep(bad, tmp_path / "b")
    assert proc.returncode == 2 and "model is not set" in proc.stderr
    assert proc.stderr.count("\n") == 1                  # one line: the spare said nothing
    assert gone(before)

    grid = tmp_path / "g.yaml"
    grid.write_text(json.dumps({"name": "other", "fixed": {**TINY, "model": "sasrec"},
                                "grid": {"seed": [1]}}))
    proc = sweep(grid, tmp_path / "s", CUDA_VISIBLE_DEVICES="7")
    assert proc.returncode == 0, proc.stderr
    (log,) = (tmp_path / "s" / "workers").glob("*.log")
    assert "the spare" not in log.read_text()
    (result,) = (tmp_path / "s").glob("cells/*/result.json")
    assert json.loads(result.read_text())["status"] == "COMPLETED"
    assert gone(before)
