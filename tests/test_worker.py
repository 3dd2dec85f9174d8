"""Many cells in one process (jobs/worker.py) through the local executor: bit-for-bit the
metrics of a process per cell, a failing cell that leaves the worker's other cells alone,
each cell's time split in its result and the aggregate's compute table; packs as the dry-run
renders them."""
import json
from pathlib import Path
import subprocess
import sys

import pandas as pd

from tests.conftest import REPO

TINY = {"dataset": "synthetic", "synthetic": {"n_users": 80, "n_items": 40,
                                             "n_interactions": 1600, "seed": 3},
        "max_len": 8, "embedding_dim": 8, "num_heads": 2, "num_blocks": 1, "batch_size": 32,
        "wandb_mode": "disabled", "device": "cpu", "epochs": 2}
METRIC_PREFIXES = ("val_", "test_", "cold_")


def launcher(*args):
    proc = subprocess.run([sys.executable, "-m", "launcher", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    return proc


def results(sweep) -> dict[str, dict]:
    manifest = json.loads((sweep / "manifest.json").read_text())
    return {c["name"]: json.loads((sweep / "cells" / c["id"] / "result.json").read_text())
            for c in manifest["cells"] if (sweep / "cells" / c["id"] / "result.json").exists()}


def test_cells_in_one_worker_match_a_process_each_bit_for_bit(tmp_path):
    """One worker runs, in grid order, SASRec, SASRec of another seed and length, a GRU4Rec
    that fails in its first epoch, then BERT4Rec: the failure is recorded and the worker goes
    on, and every completed cell has exactly the metrics it has in a process of its own."""
    grid = tmp_path / "g.yaml"
    grid.write_text(json.dumps({
        "name": "shared", "fixed": TINY,
        "grid": {"model": ["sasrec", "gru4rec", "bert4rec"], "seed": [1, 2]},
        "exclude": [{"model": "gru4rec", "seed": 2}, {"model": "bert4rec", "seed": 1}],
        "overrides": [{"when": {"model": "gru4rec"}, "set": {"inject_fault": "raise@1"}},
                      {"when": {"seed": 2}, "set": {"max_len": 12}}]}))
    shared = tmp_path / "worker"
    proc = launcher("sweep", grid, "--executor", "local", "--workers", "1", "--out", shared,
                    "--order", "grid")
    assert proc.returncode == 1, proc.stderr                # one cell failed, the sweep ran on
    assert "3 completed, 1 failed" in proc.stdout
    in_worker = results(shared)
    failed = in_worker.pop("gru4rec-synthetic-L8-s1")
    assert failed["status"] == "FAILED" and "injected failure in epoch 1" in failed["reason"]
    assert [in_worker[n]["runner_cells_before"] for n in
            ("sasrec-synthetic-L8-s1", "sasrec-synthetic-L12-s2", "bert4rec-synthetic-L12-s2")] \
        == [0, 1, 3]
    assert {r["runner"] for r in in_worker.values()} == {"worker"}
    # ... all in the spare worker the launcher started before it read the grid
    (log,) = (shared / "workers").glob("*.log")
    (line,) = [x for x in log.read_text().splitlines() if "the spare started with" in x]
    assert line.endswith("taken for CUDA_VISIBLE_DEVICES=''")
    pid = int(line.split()[1].rstrip(":"))
    assert {json.loads(p.read_text())["pid"] for p in shared.glob("cells/*/running.json")} \
        == {pid}

    alone = tmp_path / "alone"
    proc = launcher("sweep", grid, "--executor", "local", "--workers", "2", "--process-per-cell",
                    "--out", alone, "--where", "model=sasrec,bert4rec")
    assert proc.returncode == 0, proc.stderr
    own = results(alone)
    assert set(own) == set(in_worker)
    for name, result in own.items():
        assert result["runner"] == "process-per-cell" and result["status"] == "COMPLETED"
        metrics = {k: v for k, v in result.items() if k.startswith(METRIC_PREFIXES)}
        assert len(metrics) > 10
        assert metrics == {k: in_worker[name][k] for k in metrics}, name

    # each cell's time split, and the sweep's overhead against its training
    for result in [*own.values(), *in_worker.values()]:
        parts = [result[f"time_{p}_s"] for p in ("start", "setup", "epochs", "saving", "final")]
        assert all(isinstance(p, float) and p >= 0 for p in parts)
        assert result["time_queue_s"] is None                  # not SLURM
        assert sum(parts[1:]) <= result["wall_time_s"] + 1e-6
    proc = launcher("aggregate", shared, "--no-plots", "--out", tmp_path / "agg")
    assert proc.returncode == 0, proc.stderr
    compute = pd.read_csv(tmp_path / "agg" / "compute.csv").set_index("model")
    total = compute.loc["all"]
    assert total["epochs_s"] == sum(r["time_epochs_s"] for r in in_worker.values())
    assert 0 < total["overhead_share"] < 1
    assert total["cell_s"] >= total["epochs_s"] + total["setup_s"]


def test_dry_run_renders_packs_and_packing_keeps_the_cell_ids(tmp_path):
    def grid(name, **resources):
        path = tmp_path / f"{name}.yaml"
        path.write_text(json.dumps({"name": "pack", "fixed": TINY,
                                    "grid": {"model": ["sasrec"], "seed": [1, 2, 3, 4, 5]},
                                    "resources": {"gpus": 1, "time": "00:10:00", **resources}}))
        return path

    packed = launcher("sweep", grid("packed", cells_per_job=2), "--executor", "dry-run",
                      "--out", tmp_path / "p")
    assert packed.returncode == 0, packed.stderr
    script = (tmp_path / "p" / "sbatch" / "array000.sh").read_text()
    ids = [c["id"] for c in json.loads((tmp_path / "p" / "manifest.json").read_text())["cells"]]
    assert "#SBATCH --array=0-2%3" in script                  # 5 cells in 3 jobs
    assert f"#   task 0: {ids[0]} {ids[1]}" in script and f"#   task 2: {ids[4]}" in script
    plain = launcher("sweep", grid("plain"), "--executor", "dry-run", "--out", tmp_path / "u",
                     "--cells-per-job", "5")
    assert plain.returncode == 0, plain.stderr
    script = (tmp_path / "u" / "sbatch" / "array000.sh").read_text()
    assert "#SBATCH --array" not in script and f"#   task 0: {' '.join(ids)}" in script
    assert [c["id"] for c in json.loads((tmp_path / "u" / "manifest.json").read_text())["cells"]] \
        == ids                                   # how cells are packed is not their identity
    bad = launcher("sweep", grid("bad", nodes=2), "--executor", "dry-run", "--out", tmp_path / "b",
                   "--cells-per-job", "2")
    assert bad.returncode == 2 and "packing is for cells of one node" in bad.stderr
    assert not (tmp_path / "b").exists()


def test_each_cell_in_a_worker_writes_its_own_offline_wandb_run(tmp_path):
    """Two cells, one worker, W&B offline: two run folders that `wandb sync` can upload, each
    in its own cell folder, each holding its own run (id = the cell's id) and no other."""
    grid = tmp_path / "g.yaml"
    grid.write_text(json.dumps({"name": "wb", "fixed": {**TINY, "wandb_mode": "offline"},
                                "grid": {"model": ["sasrec"], "seed": [1, 2]}}))
    sweep = tmp_path / "s"
    proc = launcher("sweep", grid, "--executor", "local", "--workers", "1", "--out", sweep)
    assert proc.returncode == 0, proc.stderr
    logs = {}
    for c in json.loads((sweep / "manifest.json").read_text())["cells"]:
        cell = sweep / "cells" / c["id"]
        result = json.loads((cell / "result.json").read_text())
        assert result["runner"] == "worker" and result["tracking_mode"] == "offline"
        assert not result.get("tracking_error"), result["tracking_error"]
        (fragment,) = json.loads((cell / "wandb_fragments.json").read_text())
        run_dir = Path(fragment["dir"])
        assert fragment["run_id"] == c["id"] and cell in run_dir.parents
        (log,) = run_dir.glob("*.wandb")                  # what `wandb sync` uploads
        logs[c["id"]] = log.read_bytes()
    (a, log_a), (b, log_b) = logs.items()
    assert a.encode() in log_a and b.encode() not in log_a and b.encode() in log_b
