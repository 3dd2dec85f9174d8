"""The executor seam: a new executor is one subclass and one `register` line. Shown with an
executor defined here that runs cells in this process, through the public CLI (sweep, status,
resume, cancel) with nothing else of the launcher changed."""
import json
from pathlib import Path

import pytest

from jobs.train_cell import TrainCell
from launcher import executors
from launcher.__main__ import main as launcher_main
from launcher.executors import Executor, SchedulerState

TINY = {"dataset": "synthetic", "synthetic": {"n_users": 60, "n_items": 30,
                                             "n_interactions": 900, "seed": 3},
        "max_len": 6, "embedding_dim": 8, "num_heads": 1, "num_blocks": 1, "batch_size": 32,
        "wandb_mode": "disabled", "device": "cpu", "epochs": 1}


class InProcessExecutor(Executor):
    """Runs each cell's job callable here, one after another; a cell whose model is `pop`
    is 'held' by its scheduler (queued) until cancelled."""
    name = "in-process"
    help = "run the cells in this process (a test)"
    cancels = "held cell(s)"
    held: set[str] = set()
    cancelled: set[str] = set()

    def submit(self, sweep, cells):
        sweep.record_submissions([{"cell": c.id, "executor": self.name, "job_id": f"ip-{c.id}"}
                                  for c in cells])

    def wait(self, sweep, cells):
        for c in cells:
            if c.params["model"] == "pop" and c.id not in self.cancelled:
                self.held.add(c.id)
            else:
                TrainCell(str(sweep.cell_dir(c.id)))()
        return 0

    def scheduler_states(self, sweep, submissions):
        return {c: SchedulerState("PENDING") if c in self.held else
                SchedulerState("CANCELLED", "cancelled by the test") for c in submissions}

    def cancel(self, sweep, submissions):
        stopped = self.held & set(submissions)
        self.held -= stopped
        self.cancelled |= stopped
        return len(stopped)


@pytest.fixture
def in_process():
    executors.register(InProcessExecutor)
    yield InProcessExecutor
    del executors.REGISTRY[InProcessExecutor.name]


def held_sweep(tmp_path, capsys) -> Path:
    """gru4rec and pop through the in-process executor: gru4rec COMPLETED, pop held (PENDING)."""
    grid = tmp_path / "g.yaml"
    grid.write_text(json.dumps({"name": "ip", "fixed": TINY,
                                "grid": {"model": ["gru4rec", "pop"]}}))
    out = tmp_path / "s"
    assert launcher_main(["sweep", str(grid), "--executor", "in-process", "--out", str(out)]) == 0
    capsys.readouterr()
    return out


def test_a_registered_executor_runs_through_every_command(in_process, tmp_path, capsys):
    out = held_sweep(tmp_path, capsys)
    assert launcher_main(["status", str(out), "--json"]) == 0
    states = {r["name"].split("-")[0]: r["state"] for r in json.loads(capsys.readouterr().out)}
    assert states == {"gru4rec": "COMPLETED", "pop": "PENDING"}   # pop: held by its scheduler

    assert launcher_main(["cancel", str(out)]) == 0
    assert "1 held cell(s)" in capsys.readouterr().out
    assert launcher_main(["status", str(out), "--json"]) == 0
    rows = {r["name"].split("-")[0]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["pop"]["state"] == "CANCELLED" and rows["pop"]["reason"] == "cancelled by the test"

    assert launcher_main(["resume", str(out)]) == 0    # the sweep's own executor, by name
    assert "resuming 1 cell(s)" in capsys.readouterr().out
    assert launcher_main(["status", str(out), "--json"]) == 0
    assert {r["state"] for r in json.loads(capsys.readouterr().out)} == {"COMPLETED"}


def test_unknown_executor_names_the_valid_ones():
    with pytest.raises(ValueError, match="valid: slurm, local, dry-run"):
        executors.get("kubernetes")


def test_extend_grows_a_sweep_a_slice_at_a_time(in_process, tmp_path, capsys):
    grid = tmp_path / "g.yaml"
    grid.write_text(json.dumps({"name": "ip", "fixed": TINY,
                                "grid": {"model": ["gru4rec", "lstm"], "seed": [1, 2]}}))
    out = tmp_path / "s"
    sweep = ["sweep", str(grid), "--executor", "in-process", "--out", str(out)]
    assert launcher_main(sweep + ["--where", "model=gru4rec", "--extend"]) == 0  # starts it
    first = json.loads((out / "manifest.json").read_text())["cells"]
    result = out / "cells" / first[0]["id"] / "result.json"
    stamp = result.stat().st_mtime_ns
    assert launcher_main(sweep + ["--where", "model=lstm"]) == 2      # another slice: refused
    assert "holds another sweep" in capsys.readouterr().err
    assert launcher_main(sweep + ["--extend"]) == 0
    assert "2 cell(s) added" in capsys.readouterr().out
    cells = json.loads((out / "manifest.json").read_text())["cells"]
    assert cells[:2] == first and len(cells) == 4
    assert result.stat().st_mtime_ns == stamp                          # not run again
    assert launcher_main(["status", str(out), "--json"]) == 0
    assert [r["state"] for r in json.loads(capsys.readouterr().out)] == ["COMPLETED"] * 4
    assert launcher_main(sweep + ["--extend"]) == 0
    assert "has all 4 cell(s)" in capsys.readouterr().out

    other = tmp_path / "h.yaml"
    other.write_text(grid.read_text().replace('"ip"', '"other"'))
    assert launcher_main(["sweep", str(other), "--executor", "in-process", "--out", str(out),
                          "--extend"]) == 2
    assert "grid 'ip', not 'other'" in capsys.readouterr().err


def test_resume_where_checks_the_whole_sweep_and_a_finished_slice_is_nothing_to_do(
        in_process, tmp_path, capsys):
    out = held_sweep(tmp_path, capsys)      # neither of its cells is for resume
    assert launcher_main(["resume", str(out), "--where", "model=gru4rec"]) == 0
    assert "nothing to resume: every cell of the --where slice" in capsys.readouterr().out
    assert launcher_main(["resume", str(out), "--where", "model=lstm"]) == 2
    assert "no cell of" in capsys.readouterr().err
    assert launcher_main(["resume", str(out), "--where", "modle=gru4rec"]) == 2
    assert "has no parameter 'modle'" in capsys.readouterr().err


def test_extend_submits_the_cells_a_dry_run_only_listed(in_process, tmp_path, capsys):
    grid = tmp_path / "g.yaml"
    grid.write_text(json.dumps({"name": "ip", "fixed": TINY, "grid": {"model": ["gru4rec"],
                                                                     "seed": [1, 2]}}))
    out = tmp_path / "s"
    assert launcher_main(["sweep", str(grid), "--executor", "dry-run", "--out", str(out),
                          "--where", "seed=1"]) == 0
    assert launcher_main(["sweep", str(grid), "--executor", "in-process", "--out", str(out),
                          "--extend"]) == 0
    capsys.readouterr()
    assert launcher_main(["status", str(out), "--json"]) == 0
    assert [r["state"] for r in json.loads(capsys.readouterr().out)] == ["COMPLETED"] * 2
