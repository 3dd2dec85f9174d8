"""`python -m launcher tune` through the local executor: trials as cells, pruning, the best grid,
the first wave of a dry run, resume after kill -9 (of the tuner and of a trial's job) proposing
what an uninterrupted search does, a second tuner refused, and bad search blocks."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from launcher.__main__ import main
from launcher.grid import expand, load_grid
from tests.conftest import REPO

TINY = {"dataset": "synthetic", "synthetic": {"n_users": 80, "n_items": 40,
                                             "n_interactions": 1600, "seed": 3},
        "max_len": 8, "embedding_dim": 8, "num_heads": 2, "num_blocks": 1, "batch_size": 64,
        "epochs": 3, "patience": 3, "seed": 1, "wandb_mode": "disabled", "device": "cpu"}
SPACE = {"lr": {"loguniform": [1.0e-3, 3.0e-2]}, "dropout": {"uniform": [0.0, 0.5]}}


def write_tune_grid(path: Path, trials: int = 4, seed: int = 0, fixed: dict | None = None,
                    **search) -> Path:
    body = {"name": "t", "fixed": {**TINY, **(fixed or {})},
            "grid": {"model": ["sasrec", "gru4rec"]},
            "resources": {"cpus": 1, "mem": "2G", "time": "00:10:00"},
            "search": {"metric": "val_ndcg@10", "trials": trials, "parallel": 4, "seed": seed,
                       "final_seeds": [1, 2], "startup_trials": 2,
                       "pruner": {"type": "median", "startup_trials": 1, "warmup_epochs": 0},
                       "space": {"sasrec": SPACE, "gru4rec": SPACE}, **search}}
    path.write_text(json.dumps(body))
    return path


def launcher(*args, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "launcher", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"launcher {args} exit {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def report(out: Path) -> dict:
    return json.loads(launcher("tune", "status", out, "--json").stdout)


def outcomes(rep: dict) -> list[tuple]:
    return [(t["study"], t["number"], t["params"], t["state"], t["value"], t["pruned_epoch"])
            for t in rep["trials"]]


def submissions(out: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in (out / "submissions.jsonl").read_text().splitlines():
        cell = json.loads(line)["cell"]
        counts[cell] = counts.get(cell, 0) + 1
    return counts


def test_local_search_prunes_records_and_emits_a_grid_that_sweep_runs(tmp_path):
    # epochs slow enough that a pruned trial's job sees its stop request before its last one
    grid = write_tune_grid(tmp_path / "g.yaml", fixed={"epochs": 4, "epoch_sleep_s": 1.0})
    dry = launcher("tune", grid, "--executor", "dry-run", "--json", "--out", tmp_path / "dry")
    first_wave = {c["name"]: c["params"] for c in json.loads(dry.stdout)}
    assert len(first_wave) == 4 and (tmp_path / "dry" / "sbatch" / "array000.sh").exists()
    assert not (tmp_path / "dry" / "tune.journal").exists()          # a dry run records nothing

    out = tmp_path / "search"
    run = launcher("tune", grid, "--executor", "local", "--out", out,
                   "--emit-grid", tmp_path / "best.yaml")
    assert "wave 1/2" in run.stdout and "wave 2/2" in run.stdout
    rep = report(out)
    assert [(s["study"], s["trials"], s["budget"]) for s in rep["studies"]] == \
        [("sasrec/synthetic", 4, 4), ("gru4rec/synthetic", 4, 4)]     # the same budget each
    assert rep["budget"]["pruner"] == {"type": "median", "startup_trials": 1, "warmup_epochs": 0}
    trials = rep["trials"]
    assert len(trials) == 8 and {t["state"] for t in trials} <= {"COMPLETE", "PRUNED"}
    pruned = [t for t in trials if t["state"] == "PRUNED"]
    assert pruned and all(t["pruned_epoch"] >= 1 and t["value"] is not None for t in pruned)
    stopped = []
    for t in trials:
        cell = out / "cells" / t["cell"]
        config = json.loads((cell / "cell.json").read_text())["config"]
        assert {k: config[k] for k in SPACE} == t["params"] and config["wandb_group"] == "t"
        result = json.loads((cell / "result.json").read_text())
        if t["state"] == "COMPLETE":
            assert t["value"] == result["val_ndcg@10"]
        else:           # asked to stop; a job that saw it in time stopped training there
            assert "after epoch" in json.loads((cell / "stop.json").read_text())["reason"]
            assert (result["epochs_run"] < 4) == (result["stop_request"] is not None)
            stopped += [t["number"]] if result["epochs_run"] < 4 else []
        name = f"{result['model']}-synthetic-L8-s1-t{t['number']}"
        if name in first_wave:                  # the dry run showed this wave as it ran
            assert {k: first_wave[name][k] for k in SPACE} == t["params"]
    assert stopped, "no pruned trial's job stopped before its last epoch"

    # The best grid: each model's best completed trial at the final seeds.
    best = {s["model"]: s["best"]["params"] for s in rep["studies"]}
    cells = expand(load_grid(tmp_path / "best.yaml"))
    assert sorted((c.config.model, c.config.seed) for c in cells) == \
        sorted((m, s) for m in best for s in (1, 2))
    for c in cells:
        assert {k: c.params[k] for k in SPACE} == best[c.config.model]
        assert c.params["epochs"] == 4 and c.params["embedding_dim"] == 8
    launcher("sweep", tmp_path / "best.yaml", "--executor", "dry-run", "--out", tmp_path / "final")
    launcher("aggregate", tmp_path / "final", "--no-plots")
    main_table = pd.read_csv(tmp_path / "final" / "aggregate" / "main.csv")
    for m, params in best.items():                  # the main table shows the tuned values
        row = main_table[main_table["model"] == m].iloc[0]
        assert row["lr"] == pytest.approx(params["lr"]) and \
            row["dropout"] == pytest.approx(params["dropout"])

    before = submissions(out)
    again = launcher("tune", grid, "--executor", "local", "--out", out)     # a finished search
    assert "wave 1/2" not in again.stdout and submissions(out) == before
    assert outcomes(report(out)) == outcomes(rep)


def _wait(predicate, what: str, timeout: float = 240):
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_kill_9_of_tuner_and_trial_resumes_to_the_uninterrupted_search(tmp_path):
    # successive halving: the wave's curves are reported in lockstep, also across the restart
    grid = write_tune_grid(tmp_path / "g.yaml", trials=3, fixed={"epoch_sleep_s": 1.0},
                           pruner={"type": "successive_halving", "min_epochs": 1,
                                   "reduction_factor": 2})
    reference = tmp_path / "reference"
    launcher("tune", grid, "--executor", "local", "--out", reference)
    expected = report(reference)
    # the victim: a trial of the second wave that completes (it is resubmitted, not pruned)
    victim = next(t for t in expected["trials"] if t["number"] == 2 and t["state"] == "COMPLETE")

    out = tmp_path / "search"
    tuner = subprocess.Popen([sys.executable, "-m", "launcher", "tune", str(grid), "--executor",
                              "local", "--out", str(out)], cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        cell = out / "cells" / victim["cell"]
        _wait(lambda: (cell / "checkpoint.pt").exists(), "the victim's first checkpoint")
        os.kill(json.loads((cell / "running.json").read_text())["pid"], signal.SIGKILL)
        os.kill(tuner.pid, signal.SIGKILL)
    finally:
        tuner.kill()
        tuner.wait()
    second = subprocess.Popen([sys.executable, "-m", "launcher", "tune", str(grid), "--executor",
                               "local", "--out", str(out)], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: f"pid {second.pid} " in (out / ".tune.lock").read_text(), "its lock")
        third = launcher("tune", grid, "--executor", "local", "--out", out, check=False)
        assert third.returncode == 2 and f"{out} is being tuned by" in third.stderr
        stdout, stderr = second.communicate(timeout=300)
    finally:
        second.kill()
    assert second.returncode == 0, stdout + stderr

    assert outcomes(report(out)) == outcomes(expected)    # same proposals, values, pruning
    runs = submissions(out)
    assert runs.pop(victim["cell"]) == 2 and set(runs.values()) == {1}
    result = json.loads((out / "cells" / victim["cell"] / "result.json").read_text())
    assert result["resumed_from_epoch"] >= 1


def test_sigterm_stops_the_tuner_as_ctrl_c_and_the_same_command_goes_on(tmp_path):
    # a device call or a batch system ends the tuner with SIGTERM (timeout, scancel)
    grid = write_tune_grid(tmp_path / "g.yaml", trials=2, fixed={"epochs": 4, "epoch_sleep_s": 1.0})
    out = tmp_path / "search"
    args = [sys.executable, "-m", "launcher", "tune", str(grid), "--executor", "local",
            "--out", str(out)]
    tuner = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        _wait(lambda: any((out / "cells").glob("*/checkpoint.pt")), "a trial's first checkpoint")
        tuner.send_signal(signal.SIGTERM)
        stdout, stderr = tuner.communicate(timeout=120)
    finally:
        tuner.kill()
    assert tuner.returncode == 130, stdout + stderr
    assert f"the same `tune` command on {out} continues the search" in stderr
    launcher(*args[3:])                                              # goes on to the end
    rep = report(out)
    assert len(rep["trials"]) == 4 and {t["state"] for t in rep["trials"]} <= {"COMPLETE", "PRUNED"}
    resumed = [json.loads(p.read_text()).get("resumed_from_epoch")
               for p in (out / "cells").glob("*/result.json")]
    assert any(r and r >= 1 for r in resumed), resumed     # a stopped trial kept its epochs


def test_dry_run_proposes_by_seed_and_records_nothing(tmp_path):
    waves = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        grid = write_tune_grid(tmp_path / f"{name}.yaml", seed=seed)
        proc = launcher("tune", grid, "--executor", "dry-run", "--json", "--parallel", "2",
                        "--out", tmp_path / name)
        waves[name] = [(c["name"], {k: c["params"][k] for k in SPACE})
                       for c in json.loads(proc.stdout)]
    assert [n for n, _ in waves["a"]] == ["sasrec-synthetic-L8-s1-t0", "gru4rec-synthetic-L8-s1-t0"]
    assert waves["a"] == waves["b"] and waves["a"] != waves["c"]
    text = launcher("tune", tmp_path / "a.yaml", "--executor", "dry-run", "--out",
                    tmp_path / "a4").stdout
    assert "the first of 2 waves" in text and "sasrec/synthetic #0: lr=" in text


BAD_SEARCH = [
    ({"metric": "test_ndcg@10"}, "search.metric", "validation metric, never a test one"),
    ({"metric": "val_ndcg@7"}, "search.metric", "evaluates at ks [5, 10, 20]"),
    ({"trials": 0}, "search.trials", "integer >= 1"),
    ({"final_seeds": []}, "search.final_seeds", "distinct seeds"),
    ({"pruner": "hyperband"}, "search.pruner.type", "valid: median, successive_halving, none"),
    ({"pruner": {"type": "median", "min_epochs": 2}}, "search.pruner.min_epochs",
     "valid: startup_trials, warmup_epochs"),
    ({"sampler": "grid"}, "search.sampler", "valid: metric, trials"),
    ({"space": {"sasrec": SPACE}}, "search.space", "no space for gru4rec"),
    ({"space": {"sasrec": SPACE, "gru4rec": SPACE, "xlstm": SPACE}}, "search.space.xlstm",
     "valid: sasrec, gru4rec"),
    ({"space": {"sasrec": {"lr": {"normal": [0, 1]}}, "gru4rec": SPACE}},
     "search.space.sasrec.lr", "valid: choice, int, uniform, loguniform"),
    ({"space": {"sasrec": {"num_blocks": {"uniform": [1, 3]}}, "gru4rec": SPACE}},
     "search.space.sasrec.num_blocks.uniform", "num_blocks is of type int"),
    ({"space": {"sasrec": {"weight_decay": {"loguniform": [0.0, 0.1]}}, "gru4rec": SPACE}},
     "search.space.sasrec.weight_decay.loguniform", "starts above 0"),
    ({"space": {"sasrec": {"lr": {"loguniform": [0.0, 0.1]}}, "gru4rec": SPACE}},
     "search.space.sasrec.lr.loguniform[0]", "lr must be > 0, got 0.0"),
    ({"space": {"sasrec": {"optimizer": {"choice": ["adam", "sgd"]}}, "gru4rec": SPACE}},
     "search.space.sasrec.optimizer.choice[1]", "valid: adam, adamw"),
    ({"space": {"sasrec": {"epochs": {"int": [2, 9]}}, "gru4rec": SPACE}},
     "search.space.sasrec.epochs", "the same for every trial"),
    # each spent a trial of the budget that FAILED at once (num_heads 2 in TINY)
    ({"space": {"sasrec": {"embedding_dim": {"choice": [16, 15]}}, "gru4rec": SPACE}},
     "search.space.sasrec", "a trial could draw embedding_dim=15 (sasrec: embedding_dim must "
                            "be divisible by num_heads"),
    ({"space": {"sasrec": {"embedding_dim": {"int": [8, 200]}}, "gru4rec": SPACE}},
     "search.space.sasrec", "a trial could draw embedding_dim=9"),
]


@pytest.mark.parametrize("search,field,problem", BAD_SEARCH, ids=[b[1] for b in BAD_SEARCH])
def test_bad_search_blocks_exit_2_naming_file_and_field(tmp_path, capsys, search, field, problem):
    grid = write_tune_grid(tmp_path / "g.yaml", **search)
    assert main(["tune", str(grid), "--executor", "local", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {grid}: {field}: ") and problem in err, err
    assert len(err.splitlines()) == 1 and not (tmp_path / "s").exists()


def test_tune_refuses_grids_without_one_cell_per_model_and_dataset(tmp_path, capsys):
    grid = write_tune_grid(tmp_path / "g.yaml")
    body = json.loads(grid.read_text())
    for change, needle in ((lambda b: b["grid"].update(seed=[1, 2]) or b["fixed"].pop("seed"),
                            "grid.seed: a search"),
                           (lambda b: b["grid"].update(weight_decay=[0.0, 0.1]),
                            "several cells of sasrec/synthetic"),
                           (lambda b: b.pop("search"), "search: the grid has no search block")):
        changed = json.loads(json.dumps(body))
        change(changed)
        grid.write_text(json.dumps(changed))
        assert main(["tune", str(grid), "--executor", "dry-run", "--out",
                     str(tmp_path / "s")]) == 2
        assert needle in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
    assert main(["tune", "status", str(tmp_path)]) == 2
    assert "not a sweep directory" in capsys.readouterr().err


def test_an_emit_grid_path_the_end_could_not_write_is_refused_before_the_search(tmp_path,
                                                                                capsys):
    """--emit-grid naming the search's own grid replaced it at the search's end, and a folder
    ended a finished search in IsADirectoryError's traceback: both are refused first."""
    grid = write_tune_grid(tmp_path / "g.yaml")
    before = grid.read_text()
    for target, needle in ((grid, "the search's own grid"), (tmp_path, "a folder")):
        assert main(["tune", str(grid), "--executor", "local", "--out", str(tmp_path / "s"),
                     "--emit-grid", str(target)]) == 2
        assert f"--emit-grid {target}: {needle}" in capsys.readouterr().err
    assert grid.read_text() == before and not (tmp_path / "s").exists()



@pytest.mark.parametrize("name", ["tune-quickstart", "tune-ml1m"])
def test_shipped_search_grids_show_their_first_wave(tmp_path, name):
    proc = launcher("tune", name, "--executor", "dry-run", "--json", "--out", tmp_path / name)
    search = load_grid(REPO / "launcher" / "grids" / f"{name}.yaml").search
    assert len(json.loads(proc.stdout)) == search.parallel
