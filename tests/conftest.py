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
