"""Shared fixtures: every test gets its own data cache; the real GroupLens mirror is
../shared/data beside the checkout unless RECSYS_DATA_MIRROR says otherwise."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_mirror() -> Path:
    return Path(os.environ.get("RECSYS_DATA_MIRROR") or REPO.parent / "shared" / "data")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("RECSYS_DATA_CACHE", str(cache))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return cache


@pytest.fixture
def mirror(monkeypatch) -> Path:
    path = shared_mirror()
    if not (path / "ml-100k" / "u.data").exists():
        pytest.fail(f"the data mirror {path} has no ml-100k/u.data; set RECSYS_DATA_MIRROR")
    monkeypatch.setenv("RECSYS_DATA_MIRROR", str(path))
    return path


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """The dev SLURM cluster: the one SLURM_CONF points at (CI starts it), else started here."""
    import shutil
    import subprocess

    if os.environ.get("SLURM_CONF"):
        probe = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
        if probe.returncode == 0:
            yield os.environ["SLURM_CONF"]
            return
    if not shutil.which("slurmctld"):
        pytest.fail("no SLURM: run `slurm/dev-cluster install` (or set SLURM_CONF)")
    state = tmp_path_factory.mktemp("slurm")
    up = subprocess.run([str(REPO / "slurm" / "dev-cluster"), "up", "--dir", str(state)],
                        capture_output=True, text=True)
    if up.returncode != 0:
        pytest.fail(f"slurm/dev-cluster up failed:\n{up.stderr[-3000:]}")
    conf = up.stdout.strip().splitlines()[-1].split("=", 1)[1]
    os.environ["SLURM_CONF"] = conf
    try:
        yield conf
    finally:
        subprocess.run([str(REPO / "slurm" / "dev-cluster"), "down", "--dir", str(state)],
                       capture_output=True)
        del os.environ["SLURM_CONF"]
