"""W&B never costs a result: the environment's mode is respected, an unreachable server or a
failing init/log/finish leaves a COMPLETED cell with an offline run and the reason recorded,
and names W&B would refuse are refused in the grid before anything is written."""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from recsys_core.tracking import wandb_mode
from recsys_core.train import TrainConfig, run
from tests.conftest import REPO

TINY = dict(dataset="synthetic", synthetic={"n_users": 80, "n_items": 40,
                                            "n_interactions": 1600, "seed": 3},
            max_len=8, embedding_dim=8, num_heads=2, num_blocks=1, batch_size=64, epochs=2,
            device="cpu", model="sasrec")


@pytest.mark.parametrize("env,key,requested,expected", [
    ("offline", "k", "auto", "offline"),        # the environment says no network: respected
    ("offline", "k", "online", "offline"),
    ("dryrun", "k", "auto", "offline"),
    ("disabled", "k", "auto", "disabled"),
    (None, "k", "auto", "online"),              # a key and nothing said: online
    (None, None, "auto", "offline"),
    ("online", None, "auto", "online"),
    (None, "k", "offline", "offline"),
    ("offline", "k", "disabled", "disabled"),
])
def test_wandb_mode_follows_the_environment(monkeypatch, env, key, requested, expected):
    for name, value in (("WANDB_MODE", env), ("WANDB_API_KEY", key)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert wandb_mode(requested) == expected


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]      # closed again when this returns: nothing listens


def test_unreachable_wandb_server_still_completes_the_cell_offline(tmp_path):
    """An API key, no WANDB_MODE, the server address a closed local port: the online start
    fails within its timeout, the run falls back to offline, the cell COMPLETES."""
    out = tmp_path / "cell"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_API_KEY="x" * 40, WANDB_BASE_URL=f"http://127.0.0.1:{closed_port()}",
               WANDB_INIT_TIMEOUT="10", WANDB_SILENT="true")
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "recsys_core.train", "--synthetic", json.dumps(TINY["synthetic"]),
         *[a for k, v in TINY.items() if k != "synthetic"
           for a in (f"--{k.replace('_', '-')}", str(v))],
         "--wandb-mode", "auto", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=240, cwd=REPO)
    elapsed = time.time() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "COMPLETED" and result["test_recall@10"] is not None
    assert result["tracking_mode"] == "offline"
    assert "wandb.init (online) failed" in result["tracking_error"]
    assert "fell back to an offline run" in result["tracking_error"]
    (fragment,) = json.loads((out / "wandb_fragments.json").read_text())
    assert fragment["mode"] == "offline"
    run_dir = fragment["dir"]
    assert os.path.basename(run_dir).startswith("offline-run-")
    assert any(f.endswith(".wandb") for f in os.listdir(run_dir))   # what `wandb sync` reads
    assert elapsed < 90, f"{elapsed:.0f} s: the time lost to W&B is not bounded"


class FlakyRun:
    """A W&B run whose log fails at the second call and whose finish hangs."""
    id = "cell-x"

    def __init__(self, folder):
        self.dir = str(folder / "wandb" / "offline-run-x" / "files")
        os.makedirs(self.dir)
        self.summary, self.logged = {}, 0

    def log(self, metrics, step):
        self.logged += 1
        if self.logged == 2:
            raise ConnectionError("connection reset by peer")

    def finish(self, exit_code=0):
        time.sleep(30)


def test_failing_log_and_hanging_finish_are_recorded_not_fatal(tmp_path, monkeypatch):
    import wandb
    monkeypatch.setattr(wandb, "init", lambda **kw: FlakyRun(tmp_path / "w"))
    monkeypatch.setenv("RECSYS_WANDB_FINISH_TIMEOUT", "0.5")
    record = run(TrainConfig(**{**TINY, "epochs": 3, "wandb_mode": "offline",
                                "out": str(tmp_path / "w")}))
    assert record["status"] == "COMPLETED"
    on_disk = json.loads((tmp_path / "w" / "result.json").read_text())
    assert "wandb log failed at step 2" in on_disk["tracking_error"]
    assert "W&B logging stopped" in on_disk["tracking_error"]


def test_a_failing_start_is_recorded_and_the_cell_completes(tmp_path, monkeypatch):
    import wandb

    def refuse(**_):
        raise ValueError("entity 'nobody' not found")
    monkeypatch.setattr(wandb, "init", refuse)
    record = run(TrainConfig(**{**TINY, "wandb_mode": "offline", "out": str(tmp_path / "r")}))
    assert record["status"] == "COMPLETED"
    on_disk = json.loads((tmp_path / "r" / "result.json").read_text())
    assert on_disk["tracking_error"] == ("wandb.init (offline) failed (ValueError: entity "
                                         "'nobody' not found)")
    assert on_disk["tracking_mode"] is None


def test_a_start_that_hangs_past_its_timeout_is_left_behind(tmp_path, monkeypatch):
    """wandb.init that never returns (ignoring its own timeout): the cell still writes its
    COMPLETED result, after at most twice the init timeout and a margin."""
    import wandb
    monkeypatch.setattr(wandb, "init", lambda **kw: time.sleep(120))
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "1")
    t0 = time.time()
    record = run(TrainConfig(**{**TINY, "wandb_mode": "offline", "out": str(tmp_path / "h")}))
    assert time.time() - t0 < 40
    assert record["status"] == "COMPLETED"
    on_disk = json.loads((tmp_path / "h" / "result.json").read_text())
    assert "wandb.init did not return in 12 s" in on_disk["tracking_error"]


@pytest.mark.parametrize("field,value", [("wandb_project", "team/recsys"),
                                         ("wandb_project", "100%"),
                                         ("wandb_entity", "a:b"),
                                         ("wandb_project", "x" * 129)])
def test_names_wandb_refuses_are_refused_in_the_grid(tmp_path, field, value):
    grid = tmp_path / "g.yaml"
    grid.write_text(json.dumps({"name": "w", "fixed": {**TINY, field: value},
                                "grid": {"seed": [1, 2]}}))
    proc = subprocess.run([sys.executable, "-m", "launcher", "sweep", str(grid), "--executor",
                           "local", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert str(grid) in proc.stderr and f"fixed.{field}" in proc.stderr and "W&B name" in proc.stderr
    assert not (tmp_path / "out").exists()
