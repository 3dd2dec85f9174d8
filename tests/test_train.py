"""One cell through the trainer: determinism, resume, failures, results, W&B, two processes."""
import json
import math
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import torch

from recsys_core.train import TrainConfig, run
from recsys_core.train.eval_checkpoint import evaluate_checkpoint
from recsys_core.train.hooks import DebugHooks
from tests.conftest import REPO

TINY = dict(dataset="synthetic", synthetic={"n_users": 120, "n_items": 60,
                                            "n_interactions": 3000, "seed": 5},
            max_len=10, embedding_dim=16, num_heads=2, num_blocks=1, batch_size=64,
            lr=3e-3, patience=10, wandb_mode="disabled")


def cell(tmp_path, name, **kw):
    return TrainConfig(**{**TINY, "model": "sasrec", "epochs": 3, "out": str(tmp_path / name), **kw})


def metrics(record):
    return {k: v for k, v in record.items() if k.startswith(("val_", "test_"))}


def test_same_seed_twice_gives_identical_metrics(tmp_path):
    a = run(cell(tmp_path, "a"))
    b = run(cell(tmp_path, "b"))
    assert a["status"] == "COMPLETED" and metrics(a) == metrics(b)
    c = run(cell(tmp_path, "c", seed=7))
    assert metrics(c) != metrics(a)


def test_restart_from_epoch_checkpoint_reaches_the_same_result(tmp_path):
    """Epochs here take milliseconds, far less than checkpoint_every_s: the file is written
    after epoch 1 and at the end; the failure writes its last finished epoch (2)."""
    full = run(cell(tmp_path, "full", epochs=4))
    saved = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)
    assert saved["state"]["epoch"] == 4
    crashed = cell(tmp_path, "resumed", epochs=4, wandb_mode="offline")
    with pytest.raises(RuntimeError, match="injected failure in epoch 3"):
        run(crashed, hooks=DebugHooks(inject_fault="raise@3"))
    first = json.loads((tmp_path / "resumed" / "result.json").read_text())
    assert first["status"] == "FAILED" and "injected failure" in first["reason"]
    assert first["epochs_run"] == 2
    resumed = run(cell(tmp_path, "resumed", epochs=4, wandb_mode="offline"))
    assert resumed["resumed_from_epoch"] == 2
    # W&B offline runs can't be resumed in place: both fragments are recorded for `wandb sync`
    fragments = json.loads((tmp_path / "resumed" / "wandb_fragments.json").read_text())
    assert [f["start_epoch"] for f in fragments] == [1, 3]
    assert len({f["dir"] for f in fragments}) == 2 and len({f["run_id"] for f in fragments}) == 1
    assert metrics(resumed) == metrics(full)
    assert resumed["best_epoch"] == full["best_epoch"]


def test_an_unreadable_checkpoint_is_kept_aside_and_the_run_starts_over(tmp_path, capsys):
    """A checkpoint cut short (a full disk, a partial copy) would fail every resume: the run
    keeps it as checkpoint.pt.unreadable and the cut run's best weights beside it, starts
    over, says so, and ends as a fresh run does."""
    fresh = run(cell(tmp_path, "fresh"))
    with pytest.raises(RuntimeError, match="injected failure in epoch 3"):
        run(cell(tmp_path, "cut"), hooks=DebugHooks(inject_fault="raise@3"))
    checkpoint = tmp_path / "cut" / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    best_before = (tmp_path / "cut" / "best_model.pt").read_bytes()
    capsys.readouterr()
    again = run(cell(tmp_path, "cut"))
    assert "could not be read" in capsys.readouterr().err
    assert again["status"] == "COMPLETED" and metrics(again) == metrics(fresh)
    assert again["resumed_from_epoch"] is None
    assert "kept as checkpoint.pt.unreadable" in again["checkpoint_unreadable"]
    assert len((tmp_path / "cut" / "checkpoint.pt.unreadable").read_bytes()) == 1000
    assert (tmp_path / "cut" / "best_model.pt.before-restart").read_bytes() == best_before


def test_warmup_raises_the_learning_rate_by_steps_and_a_resume_carries_on_with_it(tmp_path):
    """warmup_steps: a linear ramp over optimiser steps, then the rate set (here the ramp
    outlasts the run: the same rise each epoch); a run killed mid-ramp and resumed ends where
    the uninterrupted one does."""
    full = run(cell(tmp_path, "full", epochs=4, warmup_steps=1000))
    lrs = pq.read_table(tmp_path / "full" / "history.parquet").column("lr").to_pylist()
    rises = [b - a for a, b in zip(lrs, lrs[1:])]
    assert 0 < lrs[0] < lrs[-1] < 3e-3 and rises == pytest.approx([rises[0]] * 3)
    assert lrs[0] == pytest.approx(3e-3 * (rises[0] / 3e-3 * 1000 + 1) / 1000)   # steps + 1
    assert run(cell(tmp_path, "short", epochs=2, warmup_steps=2))["lr_effective"] == 3e-3
    assert pq.read_table(tmp_path / "short" / "history.parquet").column("lr").to_pylist() == \
        pytest.approx([3e-3, 3e-3])
    with pytest.raises(RuntimeError, match="injected failure in epoch 2"):
        run(cell(tmp_path, "resumed", epochs=4, warmup_steps=1000),
            hooks=DebugHooks(inject_fault="raise@2"))
    resumed = run(cell(tmp_path, "resumed", epochs=4, warmup_steps=1000))
    assert resumed["resumed_from_epoch"] == 1 and metrics(resumed) == metrics(full)
    with pytest.raises(ValueError, match="warmup_steps with scheduler='onecycle'"):
        cell(tmp_path, "bad", warmup_steps=5, scheduler="onecycle")


def test_nan_loss_ends_failed_with_reason(tmp_path):
    record = run(cell(tmp_path, "nan"), hooks=DebugHooks(inject_fault="nan@2"))
    assert record["status"] == "FAILED" and "non-finite training loss" in record["reason"]
    on_disk = json.loads((tmp_path / "nan" / "result.json").read_text())
    assert on_disk["status"] == "FAILED" and on_disk["epochs_run"] == 1


def test_result_schema_history_predictions(tmp_path):
    record = run(cell(tmp_path, "s", epochs=2))
    out = tmp_path / "s"
    on_disk = json.loads((out / "result.json").read_text())
    assert not (out / "result.parquet").exists()     # result.json is the one record
    for key in ("status", "best_epoch", "epochs_run", "params_total", "params_embedding",
                "params_backbone", "params_head", "epoch_time_s", "train_sequences_per_s",
                "peak_gpu_mem_mb", "wall_time_s", "device", "python_version", "torch_version",
                "xlstm_version", "git_sha", "config_hash", "seed", "filter_seen",
                "num_processes", "test_ndcg@10", "test_mrr@10", "val_recall@5"):
        assert key in on_disk, key
    from recsys_core.models import build_model     # the same model, counted independently
    model = build_model("sasrec", on_disk["dataset_items"], cell(tmp_path, "count"))
    assert on_disk["params_total"] == sum(p.numel() for p in model.parameters())
    assert on_disk["params_embedding"] == (on_disk["dataset_items"] + 1 + 10) * 16   # items, positions
    assert on_disk["peak_gpu_mem_mb"] is None          # no GPU here: null, not an error
    hist = pq.read_table(out / "history.parquet").to_pandas()
    assert hist["epoch"].tolist() == [1, 2] and hist["gpu_util_pct"].isna().all()
    # the cost of a run: the mean epoch, the steady (median) one, the epochs up to the best
    seconds = hist["epoch_time_s"]
    assert on_disk["epoch_time_s"] == pytest.approx(seconds.mean())
    assert on_disk["epoch_time_median_s"] == pytest.approx(seconds.median())
    assert on_disk["time_to_best_s"] == pytest.approx(seconds[:on_disk["best_epoch"]].sum())
    assert "test target" in (out / "predictions.txt").read_text()
    assert record["test_recall@10"] == on_disk["test_recall@10"]


GROUPS = ("head", "mid", "tail")
LONGTAIL_FIELDS = {*(f"longtail_{m}_{g}" for m in ("users", "recall@10", "ndcg@10")
                     for g in ("all", *GROUPS)),
                   *(f"longtail_share_{g}_in_top10" for g in GROUPS), "longtail_coverage",
                   "longtail_gini_recommendations", "longtail_items_head", "longtail_items_tail"}


def test_the_result_holds_the_long_tail_of_the_test_split(tmp_path):
    """RQ2's figures in every result (recsys_core/analysis/longtail.py's definitions; that
    they equal `python -m recsys_core.analysis longtail`: tests/test_analysis.py)."""
    figures = {}
    for model in ("sasrec", "pop"):
        run(cell(tmp_path, model, model=model, epochs=2))
        result = json.loads((tmp_path / model / "result.json").read_text())
        lt = {k: v for k, v in result.items() if k.startswith("longtail_")}
        assert set(lt) == LONGTAIL_FIELDS, model
        users = [lt[f"longtail_users_{g}"] for g in GROUPS]
        assert sum(users) == lt["longtail_users_all"] == result["test_users"] == 120
        assert all(n > 0 for n in users)
        assert sum(lt[f"longtail_share_{g}_in_top10"] for g in GROUPS) == pytest.approx(1)
        n_items = result["dataset_items"]
        assert (lt["longtail_items_head"], lt["longtail_items_tail"]) == (
            math.ceil(0.2 * n_items), math.ceil(0.5 * n_items))
        assert 10 / n_items <= lt["longtail_coverage"] <= 1      # 10 distinct items at least
        assert 0 <= lt["longtail_gini_recommendations"] < 1
        assert all(0 <= lt[f"longtail_{m}@10_{g}"] <= 1 for m in ("recall", "ndcg")
                   for g in GROUPS)
        assert lt["longtail_recall@10_all"] == pytest.approx(result["test_recall@10"])
        assert lt["longtail_ndcg@10_all"] == pytest.approx(result["test_ndcg@10"])
        figures[model] = lt
    pop, sas = figures["pop"], figures["sasrec"]     # popularity recommends the head
    assert pop["longtail_share_head_in_top10"] > sas["longtail_share_head_in_top10"]
    assert pop["longtail_recall@10_head"] > pop["longtail_recall@10_tail"]
    assert pop["longtail_coverage"] < sas["longtail_coverage"]


def test_wandb_offline_run_holds_the_logged_metrics(tmp_path):
    record = run(cell(tmp_path, "w", epochs=2, wandb_mode="offline", run_id="cell-abc"))
    fragments = json.loads((tmp_path / "w" / "wandb_fragments.json").read_text())
    assert len(fragments) == 1 and fragments[0]["run_id"] == "cell-abc"
    run_dir = fragments[0]["dir"]
    assert os.path.basename(run_dir).startswith("offline-run-") and run_dir.endswith("cell-abc")
    wandb = os.path.join(os.path.dirname(sys.executable), "wandb")
    summary = json.loads(subprocess.run([wandb, "leet", "inspect", "--summary", "--json", run_dir],
                                        capture_output=True, text=True, check=True,
                                        stdin=subprocess.DEVNULL).stdout)
    assert summary["summary"]["test_recall@10"] == pytest.approx(record["test_recall@10"])
    lines = subprocess.run([wandb, "leet", "inspect", "--json", run_dir], capture_output=True,
                           text=True, check=True, stdin=subprocess.DEVNULL).stdout.splitlines()
    history = [json.loads(x)["history"]["item"] for x in lines if '"type":"history"' in x]
    # wandb.init runs in a thread while the epochs train: metrics logged before it is ready
    # reach the run afterwards, in order, as logged
    ours = pq.read_table(tmp_path / "w" / "history.parquet").to_pandas()
    assert [h["_step"] for h in history] == [h["epoch"] for h in history] == [1, 2]
    assert [h["val_recall@10"] for h in history] == pytest.approx(ours["val_recall@10"].tolist())


def test_two_cpu_processes_with_accelerate(tmp_path):
    out = tmp_path / "ddp"
    cfg = tmp_path / "cell.yaml"
    cfg.write_text(json.dumps({**TINY, "model": "sasrec", "epochs": 2, "num_processes": 2}))
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "recsys_core.train",
         "--config", str(cfg), "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "COMPLETED" and result["num_processes"] == 2
    single = evaluate_checkpoint(out, device="cpu")
    assert single["num_processes"] == 1
    # the long tail, scored by the main process alone: every user, the same ranks
    assert result["longtail_users_all"] == result["test_users"] == 120
    assert result["longtail_recall@10_all"] == pytest.approx(result["test_recall@10"])
    for k, v in single.items():
        if k.startswith(("val_", "test_")):
            assert result[k] == v, k


def test_tensorboard_option_writes_event_files(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run(cell(tmp_path, "tb", epochs=2, tensorboard=True))
    acc = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("val_recall@10")] == [1, 2]


SCALING_TINY = {"device": "cpu", "dataset": "synthetic", "max_len": 12, "embedding_dim": 16,
                "eval_batch_size": 64, "synthetic": {"n_users": 90, "n_items": 50,
                                                     "n_interactions": 2500, "seed": 3}}


def scaling(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.scaling", "--out", str(tmp_path / "out"),
         "--work", str(tmp_path / "runs"), "--models", "sasrec", "--gpus", "1", "2",
         "--variants", "graph", "--epochs", "2", "--set", json.dumps(SCALING_TINY), *args],
        capture_output=True, text=True, env=env, timeout=300, cwd=REPO)


def test_scaling_benchmark_runs_cells_on_one_and_two_cpu_processes(tmp_path):
    """benchmarks.scaling's plumbing on CPU processes (gloo): the same cell through
    jobs.train_cell on 1 and 2 processes, then on 2 at the same global batch; a profile of
    process 0 of each; the 2-process run's own metrics against its checkpoint evaluated in one
    process. A multi-GPU graph cell's process-group settings reach the launched processes."""
    proc = scaling(tmp_path, "--profile", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    import pandas as pd
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "eval_equality.json", "profiles.md", "runs.tar.gz", "scaling.csv", "scaling.md"]
    rows = pd.read_csv(out / "scaling.csv")
    assert list(rows.run) == ["sasrec-1gpu-graph", "sasrec-2gpu-graph", "sasrec-2gpu-graph-global"]
    assert set(rows.status) == {"COMPLETED"} and list(rows.batch_per_gpu) == [128, 128, 64]
    assert list(rows.global_batch) == [128, 256, 128]
    assert (rows.epochs == 2).all() and (rows.epoch_train_s > 0).all()
    result = json.loads((tmp_path / "runs" / "sasrec-2gpu-graph" / "result.json").read_text())
    env = json.loads(result["nccl_env"])
    assert env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == env["NCCL_ASYNC_ERROR_HANDLING"] == "0"
    assert env["TORCH_NCCL_BLOCKING_WAIT"] == "0" and result["multi_gpu_graph"] is True
    equality = json.loads((out / "eval_equality.json").read_text())
    assert equality["comparison"]["identical"] and equality["comparison"]["metrics_compared"] > 10
    assert equality["processes"] == 2 and equality["one_process"]["num_processes"] == 1
    profiles = (out / "profiles.md").read_text()
    assert profiles.count("steps profiled on process 0") == 3 and "## sasrec-2gpu-graph\n" in profiles
    import tarfile
    with tarfile.open(out / "runs.tar.gz") as tar:
        assert "sasrec-2gpu-graph-global/history.parquet" in tar.getnames()
    table = " ".join((out / "scaling.md").read_text().split())   # cells are padded
    assert "| sasrec | 2 | graph | 64/GPU = 128 |" in table


def test_scaling_benchmark_skips_what_its_budget_cannot_hold(tmp_path):
    proc = scaling(tmp_path, "--budget-s", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    import pandas as pd
    rows = pd.read_csv(tmp_path / "out" / "scaling.csv")
    assert list(rows.run) == ["sasrec-1gpu-graph", "sasrec-2gpu-graph"]
    assert set(rows.status) == {"SKIPPED"} and rows.reason.str.startswith("budget").all()
    assert not (tmp_path / "runs").exists()


def test_scaling_benchmark_stops_a_run_that_hangs_with_all_its_processes(tmp_path):
    """A run past its time is stopped with every process under it, accelerate launch's
    workers (which run in sessions of their own) too, and the benchmark goes on."""
    import psutil
    proc = scaling(tmp_path, "--gpus", "2", "--no-global-batch", "--run-timeout-s", "15",
                   "--set", json.dumps({**SCALING_TINY, "epoch_sleep_s": 600}))
    assert proc.returncode == 0, proc.stderr[-3000:]
    import pandas as pd
    rows = pd.read_csv(tmp_path / "out" / "scaling.csv")
    assert list(rows.run) == ["sasrec-2gpu-graph"] and list(rows.status) == ["TIMEOUT"]
    cell = str(tmp_path / "runs" / "sasrec-2gpu-graph")
    left = [p.pid for p in psutil.process_iter(["cmdline"]) if cell in (p.info["cmdline"] or [])]
    assert left == []


def test_early_stopping_follows_the_monitored_metric(tmp_path):
    record = run(cell(tmp_path, "ndcg", epochs=5, patience=1, monitor="val_ndcg@5"))
    history = pq.read_table(tmp_path / "ndcg" / "history.parquet").to_pylist()
    curve = [h["val_ndcg@5"] for h in history]
    assert record["best_epoch"] == 1 + curve.index(max(curve))
    # patience 1: training stops at the first epoch that does not improve on the best
    stopped = next((i for i in range(1, len(curve)) if curve[i] <= max(curve[:i])), None)
    assert record["epochs_run"] == (stopped + 1 if stopped is not None else 5)
    assert record["monitor"] == "val_ndcg@5"


def test_checkpoint_writer_writes_the_state_at_the_call_and_reports_failures(tmp_path):
    """Checkpoints are written in the background while training goes on (and the best weights
    with the next checkpoint, or at flush()): the file holds the weights as they were when
    saving was asked for, and a failed write surfaces at wait()."""
    import torch
    from recsys_core.models import build_model
    from recsys_core.train import checkpoint as ckpt
    model = build_model("sasrec", 50, TrainConfig(model="sasrec", embedding_dim=16))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    writer = ckpt.Writer()
    writer.save_best(tmp_path, model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)                       # training goes on, in place
    writer.flush()
    writer.wait()
    saved = torch.load(tmp_path / ckpt.BEST)
    assert all(torch.equal(saved[k], v) for k, v in before.items())
    (tmp_path / "a-file").write_text("")
    writer.save_best(tmp_path / "a-file", model)        # a file where the run folder should be
    writer.flush()
    with pytest.raises(OSError):
        writer.wait()


def test_a_stop_request_ends_training_after_the_epoch_as_early_stopping_does(tmp_path):
    """What `launcher tune` writes into a pruned trial's folder (recsys_core/train/stop.py)."""
    from recsys_core.train.results import read_history
    from recsys_core.train.stop import request_stop
    request_stop(tmp_path / "run", "pruned by a test")
    record = run(cell(tmp_path, "run", epochs=4))
    assert record["status"] == "COMPLETED" and record["epochs_run"] == 1
    assert record["stop_request"] == "pruned by a test" and record["stopped_early"]
    assert record["test_ndcg@10"] is not None        # the best checkpoint is tested, as ever
    assert len(read_history(tmp_path / "run", "val_ndcg@10")) == 1
    request_stop(tmp_path / "last", "too late")       # after the last epoch: it stops nothing
    last = run(cell(tmp_path, "last", epochs=1))
    assert last["epochs_run"] == 1 and last["stop_request"] is None


def test_a_history_read_while_the_trainer_rewrites_it_is_never_half_read(tmp_path):
    """`launcher tune` reads each running trial's curve after every poll while its trainer
    rewrites the file after every epoch; a read meeting a replacement once failed ("Page was
    smaller than expected"): pyarrow opened the path twice, the second time the next file."""
    import threading
    import time
    from recsys_core.train.results import read_history, write_history
    write_history(tmp_path, [{"epoch": 1, "val_ndcg@10": 0.0}])
    stop, errors, reads = threading.Event(), [], 0

    def trainer():
        history = []
        while not stop.is_set():
            history.append({"epoch": len(history) + 1, "val_ndcg@10": 0.01 * len(history)})
            write_history(tmp_path, history)
    thread = threading.Thread(target=trainer)
    thread.start()
    try:
        until = time.time() + 1.0
        while time.time() < until:
            try:
                curve = read_history(tmp_path, "val_ndcg@10")
                assert curve == [0.01 * i for i in range(len(curve))]
            except ValueError as e:      # pyarrow's ArrowInvalid is a ValueError
                errors.append(str(e))
            reads += 1
    finally:
        stop.set()
        thread.join()
    assert reads > 50 and errors == []


def test_a_failing_recorded_analysis_does_not_fail_the_finished_cell(tmp_path, monkeypatch):
    """The long-tail and geometry figures are extra passes after the test: if one fails (a GPU
    shared by many cells can run out of memory there), the cell is still COMPLETED and says
    why."""
    import recsys_core.analysis.geometry as geometry
    import recsys_core.train.recorded as recorded

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")
    monkeypatch.setattr(recorded, "longtail", broken)
    monkeypatch.setattr(geometry, "measures", broken)
    result = run(cell(tmp_path, "broken", epochs=1))
    assert result["status"] == "COMPLETED" and "test_recall@10" in result
    assert json.loads((tmp_path / "broken" / "result.json").read_text())["status"] == "COMPLETED"
    assert result["longtail_error"] == "RuntimeError: CUDA out of memory (simulated)"
    assert result["geometry_error"] == "RuntimeError: CUDA out of memory (simulated)"
    assert not any(k.startswith(("longtail_recall", "geometry_dims")) for k in result)
