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


def _slurm_unavailable_reason() -> str | None:
    """Why the SLURM packages are missing and cannot be installed here, or None once they are
    installed (installing them with `slurm/dev-cluster install` when root with apt-get)."""
    import shutil
    import subprocess

    if shutil.which("slurmctld"):
        return None
    if os.geteuid() != 0:
        return ("SLURM is not installed (no slurmctld on the PATH) and this user is not root: "
                "run `slurm/dev-cluster install` as root (or set SLURM_CONF to a running cluster)")
    if not shutil.which("apt-get"):
        return ("SLURM is not installed and there is no apt-get here: install slurmctld, slurmd, "
                "slurm-client, munge, slurmdbd, mariadb-server (or set SLURM_CONF)")
    proc = subprocess.run([str(REPO / "slurm" / "dev-cluster"), "install"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return f"`slurm/dev-cluster install` failed (exit {proc.returncode}): {last}"
    return None


@pytest.fixture(scope="session")
def slurm_cluster():
    """The dev SLURM cluster: the one SLURM_CONF points at (CI starts it), else one started
    here, for this test session, and stopped at its end (installing the Debian packages first
    where they are missing and this is root with apt-get): two nodes on this machine, the
    default partition `debug` the first alone (what every single-node test uses) and partition
    `multinode` both (the multi-node test). Where SLURM cannot be had, each SLURM test fails
    with one line saying why: never skipped."""
    import subprocess
    import tempfile

    if os.environ.get("SLURM_CONF"):
        probe = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
        if probe.returncode == 0:
            yield os.environ["SLURM_CONF"]
            return
    reason = _slurm_unavailable_reason()
    if reason:
        pytest.fail(reason, pytrace=False)
    # Not under pytest's tmp dir: that is mode 0700, and munged refuses a socket below a
    # directory that not everyone may enter. A short path: unix socket paths are limited.
    state = tempfile.mkdtemp(prefix="recsys-slurm-", dir="/tmp")
    os.chmod(state, 0o755)
    cluster = str(REPO / "slurm" / "dev-cluster")
    up = subprocess.run([cluster, "up", "--dir", state, "--nodes", "2"], capture_output=True,
                        text=True)
    if up.returncode != 0:
        subprocess.run([cluster, "down", "--dir", state], capture_output=True)
        last = (up.stderr.strip().splitlines() or ["?"])[-1]
        pytest.fail(f"slurm/dev-cluster up --dir {state} failed: {last}", pytrace=False)
    conf = up.stdout.strip().splitlines()[-1].split("=", 1)[1]
    os.environ["SLURM_CONF"] = conf
    try:
        yield conf
    finally:
        subprocess.run([cluster, "down", "--dir", state], capture_output=True)
        del os.environ["SLURM_CONF"]
