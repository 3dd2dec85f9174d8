"""The launcher CLI without SLURM: dry-run scripts, validation exit codes, multi-process cells
through the local executor (two CPU processes, as a multi-GPU cell runs on GPUs)."""
import json
import os
import subprocess
import sys

import pytest

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


def test_dry_run_needs_no_slurm_installed(tmp_path):
    """A laptop without SLURM renders the same sbatch scripts (submitit's executor refuses to
    start without `srun` on the PATH; a dry-run does not need it)."""
    grid = tmp_path / "g.yaml"
    grid.write_text(json.dumps({"name": "small", "fixed": TINY, "grid": {"model": ["sasrec"]},
                                "resources": {"gpus": 1, "time": "00:10:00"}}))
    (tmp_path / "empty-bin").mkdir()
    scripts = []
    for name, env in (("with", None), ("without", {**os.environ, "PATH": str(tmp_path / "empty-bin")})):
        proc = subprocess.run([sys.executable, "-m", "launcher", "sweep", str(grid), "--executor",
                               "dry-run", "--out", str(tmp_path / name)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        text = (tmp_path / name / "sbatch" / "array000.sh").read_text()
        scripts.append(text.replace(str(tmp_path / name), "SWEEP"))
    assert scripts[0] == scripts[1] and "#SBATCH --gpus-per-node=1" in scripts[0]


def test_invalid_grids_exit_2_and_write_nothing(tmp_path):
    for body, needle in [
        ({"name": "x", "grid": {"model": ["sasrec", "transformer9000"]}}, "grid.model[1]"),
        ({"name": "x", "fixed": {**TINY, "num_processes": 3}, "grid": {"model": ["sasrec"]},
          "resources": {"gpus": 2}}, "num_processes=3"),
        # a GPU cell whose xLSTM shape Triton's compiler aborts on (study-dims at D 256, 2 heads)
        ({"name": "x", "fixed": {**TINY, "device": "auto", "embedding_dim": 256},
          "grid": {"model": ["sasrec", "xlstm"]}, "resources": {"gpus": 1}},
         "cell xlstm-synthetic-L8-s42: xlstm on CUDA needs a value head dim <= 64, got 128 "
         "(embedding_dim 256 / num_heads 2): use num_heads >= 4"),
        ({"name": "x", "fixed": {**TINY, "embedding_dim": 6, "num_heads": 4},
          "grid": {"model": ["gru4rec", "sasrec"]}},
         "cell sasrec-synthetic-L8-s42: sasrec: embedding_dim must be divisible by num_heads"),
    ]:
        grid = tmp_path / "bad.yaml"
        grid.write_text(json.dumps(body))
        proc = launcher("sweep", grid, "--executor", "slurm", "--out", tmp_path / "out")
        assert proc.returncode == 2 and str(grid) in proc.stderr and needle in proc.stderr
        assert not (tmp_path / "out").exists()


def test_a_bad_count_flag_exits_2_before_any_cell_is_listed(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(json.dumps({"name": "x", "fixed": TINY, "grid": {"model": ["sasrec"]}}))
    for flag, value, needle in [("--cells-per-job", "0", "0: must be at least 1"),
                                ("--cells-per-job", "two", "'two': not a whole number")]:
        proc = launcher("sweep", grid, "--executor", "dry-run", flag, value, "--out", tmp_path / "o")
        assert proc.returncode == 2 and f"argument {flag}: {needle}" in proc.stderr, proc.stderr
        assert proc.stdout == "" and not (tmp_path / "o").exists()


def test_status_watch_takes_a_period_of_at_least_a_second(tmp_path):
    """`--watch 0` polled sacct in a busy loop, and -1 or nan ended in sleep()'s traceback."""
    grid = tmp_path / "g.yaml"
    grid.write_text(json.dumps({"name": "x", "fixed": TINY, "grid": {"model": ["sasrec"]}}))
    assert launcher("sweep", grid, "--executor", "dry-run", "--out", tmp_path / "o").returncode == 0
    for value, needle in [("0", "0: must be a number of seconds, at least 1"),
                          ("-1", "-1: must be a number of seconds, at least 1"),
                          ("nan", "nan: must be a number of seconds, at least 1"),
                          ("soon", "'soon': not a number of seconds")]:
        proc = launcher("status", tmp_path / "o", "--watch", value)
        assert proc.returncode == 2 and f"argument --watch: {needle}" in proc.stderr, proc.stderr
        assert proc.stdout == "" and "Traceback" not in proc.stderr


def test_an_out_folder_with_another_grid_yaml_is_refused_and_kept(tmp_path):
    """`--out` an existing folder that is no sweep but holds a grid.yaml (the user's notes, a
    grid of their own): the sweep's copy of its grid replaced it without a word. A grid kept
    in its own sweep folder (the same file) is still fine."""
    grid = tmp_path / "g.yaml"
    grid.write_text(json.dumps({"name": "x", "fixed": TINY, "grid": {"model": ["pop"]}}))
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "grid.yaml").write_text("my own grid\n")
    for args in (("sweep", grid, "--executor", "dry-run"),
                 ("tune", "tune-quickstart", "--executor", "local")):
        proc = launcher(*args, "--out", folder)
        assert proc.returncode == 2 and "holds a grid.yaml other than" in proc.stderr, proc.stderr
        assert (folder / "grid.yaml").read_text() == "my own grid\n"
        assert not (folder / "manifest.json").exists()
    beside = tmp_path / "beside"
    beside.mkdir()
    (beside / "grid.yaml").write_text(grid.read_text())
    proc = launcher("sweep", beside / "grid.yaml", "--executor", "dry-run", "--out", beside)
    assert proc.returncode == 0 and (beside / "manifest.json").exists(), proc.stderr


def test_an_out_that_is_a_file_is_refused_and_kept(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(json.dumps({"name": "x", "fixed": TINY, "grid": {"model": ["pop"]}}))
    afile = tmp_path / "notes.txt"
    afile.write_text("kept")
    sweep = launcher("sweep", grid, "--executor", "local", "--out", tmp_path / "s")
    assert sweep.returncode == 0, sweep.stderr
    for args, needle in [(("sweep", grid, "--executor", "local"), "a file, not a sweep folder"),
                         (("tune", "tune-quickstart", "--executor", "local"),
                          "a file, not a sweep folder"),
                         (("aggregate", tmp_path / "s"), "a file, not a folder for the tables")]:
        proc = launcher(*args, "--out", afile)
        assert proc.returncode == 2 and f"--out {afile}: {needle}" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and afile.read_text() == "kept"
    # the tables written among the cells' folders (or beside the manifest) refused too
    before = sorted(p.name for p in (tmp_path / "s").rglob("*"))
    for out in (tmp_path / "s" / "cells", tmp_path / "s" / "cells" / "t", tmp_path / "s"):
        proc = launcher("aggregate", tmp_path / "s", "--out", out)
        assert proc.returncode == 2 and f"--out {out}: the sweep folder" in proc.stderr
    assert sorted(p.name for p in (tmp_path / "s").rglob("*")) == before
    assert launcher("aggregate", tmp_path / "s").returncode == 0    # S/aggregate, as ever


def test_gpu_cells_on_a_machine_without_gpus(tmp_path):
    """device=cuda cannot run without a GPU: refused before anything is written; device auto
    runs on the CPU, and the launcher says so."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    for device, code in (("cuda", 2), ("auto", 0)):
        grid = tmp_path / f"{device}.yaml"
        grid.write_text(json.dumps({"name": "x", "fixed": {**TINY, "device": device},
                                    "grid": {"model": ["pop"]}, "resources": {"gpus": 1}}))
        out = tmp_path / device
        proc = subprocess.run([sys.executable, "-m", "launcher", "sweep", str(grid), "--executor",
                               "local", "--out", str(out)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == code, proc.stdout + proc.stderr
        if device == "cuda":
            assert "sets device=cuda and no GPU is visible here" in proc.stderr
            assert not out.exists()
        else:
            assert "1 cell(s) ask for GPUs and none is visible here: they run on the CPU" \
                in proc.stdout


def test_an_xlstm_shape_only_the_gpu_refuses_passes_on_the_cpu(tmp_path):
    """The launcher's check of xLSTM shapes is the GPU kernels': the same cell on the CPU (no
    GPU in its resources, or device cpu) is a valid cell."""
    for i, (fixed, resources) in enumerate([
            ({**TINY, "device": "auto", "embedding_dim": 256}, {"gpus": 0}),
            ({**TINY, "embedding_dim": 256}, {"gpus": 1})]):
        grid = tmp_path / "g.yaml"
        grid.write_text(json.dumps({"name": "x", "fixed": fixed, "grid": {"model": ["xlstm"]},
                                    "resources": resources}))
        proc = launcher("sweep", grid, "--executor", "dry-run", "--out", tmp_path / f"out{i}")
        assert proc.returncode == 0, proc.stderr


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
    log = (cell / "local.out").read_text().splitlines()     # the job prints its epochs, once
    assert [line.split()[1] for line in log if line.startswith("epoch ")] == ["1/2", "2/2"]
    single = evaluate_checkpoint(cell, device="cpu")
    assert all(result[k] == v for k, v in single.items() if k.startswith(("val_", "test_")))
    # status: the table, JSON, and --watch (returns once nothing is queued or running)
    table = launcher("status", sweep)
    assert table.returncode == 0 and "1/1 finished  COMPLETED 1" in table.stdout
    rows = json.loads(launcher("status", sweep, "--json").stdout)
    assert [r["state"] for r in rows] == ["COMPLETED"]
    watch = launcher("status", sweep, "--watch", "1")
    assert watch.returncode == 0 and "1/1 finished" in watch.stdout


def test_where_selects_cells_and_names_the_valid_choices(tmp_path):
    proc = launcher("sweep", "paper", "--executor", "dry-run", "--json", "--out", tmp_path / "a",
                    "--where", "dataset=ml-100k", "--where", "max_len=32,64")
    assert proc.returncode == 0, proc.stderr
    cells = json.loads(proc.stdout)
    assert len(cells) == 6 * 2 * 3
    assert {c["params"]["dataset"] for c in cells} == {"ml-100k"}
    assert {c["params"]["max_len"] for c in cells} == {32, 64}
    bad = launcher("sweep", "paper", "--executor", "dry-run", "--out", tmp_path / "b",
                   "--where", "dataset=ml-50k")
    assert bad.returncode == 2 and "ml-100k, ml-10m, ml-1m, ml-20m" in bad.stderr
    bad = launcher("sweep", "paper", "--executor", "dry-run", "--out", tmp_path / "c",
                   "--where", "datset=ml-100k")
    assert bad.returncode == 2 and "no parameter 'datset'" in bad.stderr
    # a typo in one value of a list dropped that value's cells without a word
    for clause, needle in (("max_len=32,46", "has max_len in [46]; its values: 128, 32, 64"),
                           ("max_len=32,,64", "expected KEY=VALUE[,VALUE...]")):
        bad = launcher("sweep", "paper", "--executor", "dry-run", "--out", tmp_path / "e",
                       "--where", "dataset=ml-100k", "--where", clause)
        assert bad.returncode == 2 and needle in bad.stderr, bad.stderr
    assert not any((tmp_path / d).exists() for d in "bce")
    grid = tmp_path / "lr.yaml"        # 1e-3 is a number here as in a grid file (YAML 1.1: text)
    grid.write_text("name: x\nfixed: {dataset: synthetic}\ngrid:\n  model: [sasrec]\n"
                    "  lr: [1e-3, 3.0e-3]\n")
    proc = launcher("sweep", grid, "--executor", "dry-run", "--json", "--out", tmp_path / "d",
                    "--where", "lr=1e-3")
    assert proc.returncode == 0, proc.stderr
    assert [c["params"]["lr"] for c in json.loads(proc.stdout)] == [0.001]


def test_local_executor_gives_cells_their_gpus(tmp_path, monkeypatch):
    """A 2-GPU cell gets two distinct GPUs, pop none, and with --cells-per-gpu 2 no GPU ever
    holds more than two cells at once (the cell processes are replaced by a recorder)."""
    import threading
    import time
    from launcher.executors import local
    from launcher.grid import expand, load_grid
    from launcher.sweep import Sweep
    grid = tmp_path / "g.yaml"
    grid.write_text(json.dumps({
        "name": "pool", "fixed": TINY, "grid": {"model": ["sasrec", "gru4rec", "pop"],
                                                "seed": [1, 2, 3]},
        "overrides": [{"when": {"model": "gru4rec"}, "set": {"resources": {"gpus": 2}}},
                      {"when": {"model": "pop"}, "set": {"resources": {"gpus": 0}}}],
        "resources": {"gpus": 1}}))
    cells = expand(load_grid(grid))
    sweep = Sweep.create(tmp_path / "s", grid, "pool", cells, "local")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    lock, busy, peak, got = threading.Lock(), {"0": 0, "1": 0, "2": 0}, {}, {}

    def fake_run_one(sweep, cell, gpus, threads, log, running=None, workers=None, mps=None,
                     cells_per_gpu=1):
        with lock:
            got[cell.params["model"] + str(cell.params["seed"])] = gpus
            for g in gpus or []:
                busy[g] += 1
                peak[g] = max(peak.get(g, 0), busy[g])
        time.sleep(0.05)
        with lock:
            for g in gpus or []:
                busy[g] -= 1
        return 0

    monkeypatch.setattr(local, "run_one", fake_run_one)
    codes = local.run_cells(sweep, cells, workers=8, log=lambda *a: None, cells_per_gpu=2)
    assert len(codes) == 9 and set(codes.values()) == {0}
    for seed in (1, 2, 3):
        assert len(got[f"sasrec{seed}"]) == 1 and got[f"pop{seed}"] == []
        assert len(set(got[f"gru4rec{seed}"])) == 2
    assert max(peak.values()) <= 2

    # A launcher bug while running one cell fails that cell, said in the log; the slot goes on
    # (before, its thread died silently and the cell was missing from the run's summary).
    def broken_run_one(sweep, cell, gpus, *args, **kwargs):
        if cell.params["model"] == "sasrec" and cell.params["seed"] == 2:
            raise KeyError("a bug")
        return 0
    monkeypatch.setattr(local, "run_one", broken_run_one)
    lines: list[str] = []
    codes = local.run_cells(sweep, cells, workers=1, log=lines.append, cells_per_gpu=2)
    assert len(codes) == 9 and sorted(codes.values()) == [0] * 8 + [1]
    (line,) = [x for x in lines if "the launcher could not run it" in x]
    assert "sasrec" in line and "KeyError: 'a bug'" in line
    too_big = [c for c in cells if c.params["model"] == "gru4rec"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(ValueError, match="asks for 2 GPUs, 1 visible"):
        local.run_cells(sweep, too_big, log=lambda *a: None)


def test_resume_of_a_manifest_edited_into_an_invalid_cell_is_one_line(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(json.dumps({"name": "x", "fixed": TINY, "grid": {"model": ["pop", "sasrec"]}}))
    sweep = tmp_path / "s"
    assert launcher("sweep", grid, "--executor", "dry-run", "--out", sweep).returncode == 0
    manifest = json.loads((sweep / "manifest.json").read_text())
    manifest["cells"][1]["params"]["model"] = "sasrek"          # edited by hand
    (sweep / "manifest.json").write_text(json.dumps(manifest))
    proc = launcher("resume", sweep, "--executor", "local")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip() == (f"error: {sweep / 'manifest.json'}: cell "
                                   f"{manifest['cells'][1]['name']}: model='sasrek'; valid: "
                                   "bert4rec, gru4rec, lstm, mamba4rec, pop, sasmamba, sasrec, xlstm")
    assert not list(sweep.glob("cells/*/result.json"))        # nothing ran
