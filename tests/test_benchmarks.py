"""The benchmarks' shared helpers (benchmarks/report.py, benchmarks/timing.py) and the
background sampler of recsys_core.telemetry.GpuTelemetry that the GPU benchmark reads."""
import json
import math
import time

import pandas as pd
import pytest
import torch

from benchmarks import report, timing
from recsys_core.telemetry import GpuTelemetry


def test_cells_missing_numbers_and_text():
    assert report.cell(None) == report.cell(math.nan) == "–"
    assert report.cell(0.123456) == "0.1235" and report.cell(12345.6) == "12,346"
    assert report.cell(7438.1, ",.0f") == "7,438" and report.cell(2) == "2"
    assert report.cell("a\nb  c|d") == "a b c\\|d" and report.cell("") == ""


def test_write_gives_markdown_tables_and_the_csv(tmp_path):
    data = pd.DataFrame({"model": ["sasrec", "xlstm"], "epoch_s": [0.5, None]})
    table = data.rename(columns={"epoch_s": "epoch (s)"})
    text = report.write(tmp_path / "out", "bench", "# Title", table, "After.", data=data)
    assert (tmp_path / "out" / "bench.md").read_text() == text
    lines = text.splitlines()
    assert lines[:2] == ["# Title", ""] and lines[-1] == "After."
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:6]]
    assert rows[0] == ["model", "epoch (s)"] and set(rows[1][0]) == {"-"}
    assert rows[2:] == [["sasrec", "0.5"], ["xlstm", "–"]]
    assert list(pd.read_csv(tmp_path / "out" / "bench.csv").columns) == ["model", "epoch_s"]
    assert report.markdown(table, {"epoch (s)": ".2f"}).splitlines()[2].split("|")[2].strip() == "0.50"


def test_timing_on_the_cpu_is_the_wall_clock():
    seconds, value = timing.timed(lambda: time.sleep(0.05) or 3, "cpu")
    assert value == 3 and 0.04 < seconds < 1
    with timing.Stopwatch() as watch:
        time.sleep(0.02)
    assert 0.015 < watch.s < 1
    calls = []
    median = timing.median_s(lambda: calls.append(time.sleep(0.01)), torch.device("cpu"), 3, warmup=2)
    assert len(calls) == 5 and 0.005 < median < 1


class FakeNvml:
    """Stands in for pynvml: utilisation 40 then 60 %, memory and power fixed."""

    def __init__(self):
        self.util = iter([40, 60])

    def nvmlDeviceGetMemoryInfo(self, handle):
        return type("Mem", (), {"used": 2**30})()

    def nvmlDeviceGetUtilizationRates(self, handle):
        return type("Util", (), {"gpu": next(self.util, 60)})()

    def nvmlDeviceGetPowerUsage(self, handle):
        return 100_000


def test_sampler_reads_in_the_background_while_its_block_runs():
    telemetry = GpuTelemetry(torch.device("cpu"))
    with telemetry.sampler() as none:          # no NVML: nothing read, no thread
        pass
    assert none.readings == [] and none.mean("gpu_util_pct") is None
    telemetry.handle, telemetry.nvml = object(), FakeNvml()
    with telemetry.sampler(period_s=0.005) as sampler:
        time.sleep(0.1)
    n = len(sampler.readings)
    time.sleep(0.03)
    assert n >= 3 and len(sampler.readings) == n               # stopped at the block's end
    assert 40 < sampler.mean("gpu_util_pct") < 60 and sampler.mean("gpu_power_w") == 100.0
    assert sampler.mean("peak_gpu_mem_mb") is None               # torch's counter, not NVML's
    assert telemetry.read()["gpu_mem_used_mb"] == 1024.0


def test_compile_reuse_smoke_run_writes_its_table(tmp_path):
    """benchmarks/compile_reuse.py: one worker's cells, then a process per cell, on shared
    caches; each cell's row says where it ran, and a cell gives the same metrics either way."""
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "benchmarks.compile_reuse", "--smoke",
                           "--cells", "2", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = pd.read_csv(tmp_path / "compile_reuse.csv")
    assert list(table["where"]) == ["new process, empty caches", "same process, a cell before",
                                    "new process, caches on disk", "new process, caches on disk"]
    assert list(table["runner"]) == ["worker", "worker", "process-per-cell", "process-per-cell"]
    assert set(table["status"]) == {"COMPLETED"}
    by_seed = table.groupby("seed")["test_recall@10"].nunique()
    assert (by_seed == 1).all()
    assert "| new process, caches on disk" in (tmp_path / "compile_reuse.md").read_text()


def test_compile_subprocesses_lists_what_a_cell_starts(tmp_path):
    """benchmarks/compile_subprocesses.py trains a cell in its process and lists the processes
    the run started, with the frames that started them (here the provenance's git call)."""
    import subprocess
    import sys
    cell = tmp_path / "cells" / "c1"
    cell.mkdir(parents=True)
    (cell / "cell.json").write_text(json.dumps({"config": dict(
        model="sasrec", dataset="synthetic", epochs=1, max_len=12, embedding_dim=8,
        num_heads=1, num_blocks=1, batch_size=64, device="cpu", wandb_mode="disabled")}))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.compile_subprocesses", str(cell)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "capture None" in proc.stdout
    started = [line for line in proc.stdout.splitlines() if line.startswith("--- started +")]
    assert any("'git', 'rev-parse'" in line for line in started)
    assert "provenance.py" in proc.stdout


def test_triton_key_benchmark_times_both_kinds_in_fresh_processes(tmp_path):
    pytest.importorskip("triton")
    from benchmarks import triton_key
    assert triton_key.main(["--repeat", "1", "--out", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "triton_key.csv")
    assert list(table["kind"]) == ["serial", "thread"]
    assert table.loc[0, "key_s"] > 0 and math.isnan(table.loc[1, "key_s"])
    assert (table["total_s"] > 0).all()


def test_grid_throughput_smoke_run_writes_its_table(tmp_path):
    """benchmarks/grid_throughput.py on its tiny CPU workload: one cell, a process of its own,
    a worker and a worker with --mps (a CPU cell: no MPS client), the same metrics, the
    columns the issue asks for, the queue order the runs were given, the epoch cap, and the
    phases of a cell's wall time that add up to it."""
    import subprocess
    import sys
    from tests.conftest import REPO
    proc = subprocess.run([sys.executable, "-m", "benchmarks.grid_throughput", "--smoke",
                           "--workloads", "smoke-cell", "--cells-per-gpu", "1", "--modes",
                           "process-per-cell", "worker", "worker-mps", "--order", "grid",
                           "--epochs", "1", "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_csv(tmp_path / "grid_throughput.csv")
    for column in ("workload", "device", "cells", "wall_s", "cells_per_min", "overhead_share",
                   "mode"):
        assert column in table.columns
    assert list(table["mode"]) == ["process-per-cell", "worker", "worker-mps"]
    assert set(table["order"]) == {"grid"}      # as the sweeps' submissions record it
    assert ((table["last_result_s"] > 0) & (table["last_result_s"] <= table["wall_s"])).all()
    cells = pd.read_csv(tmp_path / "grid_throughput_cells.csv")
    assert set(cells["order"]) == {"grid"} and set(cells["epochs"]) == {1}   # the smoke grid: 3
    assert set(cells["train_step"]) == {"eager"}          # what ran, from result.json (CPU: no graph)
    own = table.iloc[0]
    parts = cells.iloc[0][["launcher_s", "to_run_s", "setup_s", "epochs_s", "saving_s", "final_s",
                           "exit_s"]]
    assert (parts >= 0).all() and own["end_s"] >= 0
    assert abs(parts.sum() + own["end_s"] - own["wall_s"]) < 0.1, (parts, own)
    assert set(table["mps_clients"]) == {0}
    assert set(table["metrics_equal"]) == {"1/1"} and set(table["completed"]) == {1}
    assert ((table["overhead_share"] > 0) & (table["overhead_share"] < 1)).all()
    assert "| smoke-cell" in (tmp_path / "grid_throughput.md").read_text()


def test_grid_throughput_set_fixes_values_in_every_cell_of_a_copy_of_the_grid(tmp_path):
    """`--set fused_layer_norm=true` (a flag the Beauty cell is measured with and without): the
    workload's grid copied with the value fixed, its own arguments (the cell's --where) kept;
    the launcher reads the copy's cell with the value."""
    import argparse
    import subprocess
    import sys
    from benchmarks.grid_throughput import capped, setting, smoke_workloads
    from tests.conftest import REPO
    args = smoke_workloads(tmp_path)["smoke-cell"]
    copy = capped(args, 2, tmp_path, dict([setting("fused_layer_norm=true"),
                                           setting("sasrec_block=original")]))
    assert copy[1:] == args[1:] and copy[0] != args[0]
    fixed = json.loads(open(copy[0]).read())["fixed"]
    assert (fixed["fused_layer_norm"], fixed["sasrec_block"], fixed["epochs"]) == \
        (True, "original", 2)
    assert capped(args, None, tmp_path, {}) == args
    with pytest.raises(argparse.ArgumentTypeError, match="KEY=VALUE"):
        setting("fused_layer_norm")
    proc = subprocess.run([sys.executable, "-m", "launcher", "sweep", *copy, "--executor",
                           "dry-run", "--out", str(tmp_path / "s")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (cell,) = json.loads((tmp_path / "s" / "manifest.json").read_text())["cells"]
    assert cell["params"]["fused_layer_norm"] is True and cell["params"]["epochs"] == 2


def test_study_cost_estimate_multiplies_exclusive_epochs_by_the_study_best_epochs(tmp_path):
    from benchmarks import study_cost_estimate
    for i, (model, best, last, recall) in enumerate([("sasrec", 90, 110, 0.32),
                                                     ("xlstm", 120, 140, 0.31),
                                                     ("pop", 0, 0, 0.04)]):
        cell = tmp_path / "sweep" / "cells" / str(i)
        cell.mkdir(parents=True)
        (cell / "result.json").write_text(json.dumps({
            "status": "COMPLETED", "model": model, "dataset": "ml-1m-bert4rec",
            "best_epoch": best, "epochs_run": last, "test_recall@10": recall}))
    out = tmp_path / "cost.md"
    assert study_cost_estimate.main(["--sweep", str(tmp_path / "sweep"), "--out", str(out)]) == 0
    runs = study_cost_estimate.exclusive_epochs()
    per = {m: runs[m]["epoch_time_s"] + runs[m]["eval_time_s"] for m in ("sasrec", "xlstm")}
    text = out.read_text()
    assert "pop" not in text.split("| model")[1]          # trains nothing: no row
    rows = study_cost_estimate.estimate(tmp_path / "sweep").set_index("model")
    assert math.isclose(rows.loc["xlstm", "to best epoch (s)"], 120 * per["xlstm"])
    assert math.isclose(rows.loc["xlstm", "to best epoch ÷ SASRec"],
                        120 * per["xlstm"] / (90 * per["sasrec"]))
    assert math.isclose(rows.loc["xlstm", "to early stop (s)"], 140 * per["xlstm"])


def test_resume_check_kills_a_run_and_finds_its_resume_identical_on_the_cpu(tmp_path):
    from benchmarks import resume_check
    resume_check.main(["--device", "cpu", "--dataset", "synthetic", "--max-len", "10",
                       "--epochs", "3", "--models", "gru4rec", "--sleep-s", "1",
                       "--rnn-dropout", "torch",     # the layers' dropout drawn by torch
                       "--work", str(tmp_path / "w"), "--out", str(tmp_path / "out")])
    (row,) = json.loads((tmp_path / "out" / "resume_check.json").read_text())
    assert row["resumed_from_epoch"] >= 1      # the child was killed after a checkpoint
    assert row["rerun_identical"] and row["resume_identical"], row
    assert "| gru4rec" in (tmp_path / "out" / "resume_check.md").read_text()


def test_cost_from_history_sums_the_epochs_to_the_best_and_takes_the_median_epoch(tmp_path):
    """A first epoch that compiles (10 s) counts in the time to the best epoch as run, not in
    the steady epoch; ratios are against SASRec."""
    from benchmarks import cost_from_history
    for i, (model, seconds, best) in enumerate([("sasrec", [1.0, 0.2, 0.2, 0.2], 2),
                                                ("xlstm", [10.0, 0.3, 0.3, 0.3], 3)]):
        cell = tmp_path / "sweep" / "cells" / str(i)
        cell.mkdir(parents=True)
        (cell / "cell.json").write_text(json.dumps(
            {"config": {"model": model, "dataset": "d", "seed": 42}}))
        (cell / "result.json").write_text(json.dumps(
            {"status": "COMPLETED", "best_epoch": best, "wall_time_s": sum(seconds) + 1,
             "test_recall@10": 0.3}))
        pd.DataFrame({"epoch": [1, 2, 3, 4], "epoch_time_s": seconds}).to_parquet(
            cell / "history.parquet")
    cost_from_history.main([str(tmp_path / "sweep"), "--out", str(tmp_path / "cost")])
    rows = pd.read_csv(tmp_path / "cost" / "cost.csv").set_index("model")
    assert rows.loc["xlstm", "epoch_s"] == pytest.approx(0.3)
    assert rows.loc["xlstm", "first_epoch_s"] == pytest.approx(10.0)
    assert rows.loc["xlstm", "to_best_s"] == pytest.approx(10.6)
    assert rows.loc["xlstm", "steady_to_best_s"] == pytest.approx(0.9)
    assert rows.loc["sasrec", "to_best_s"] == pytest.approx(1.2)
    assert rows.loc["xlstm", "to_best_s_vs_sasrec"] == pytest.approx(10.6 / 1.2)
    assert rows.loc["xlstm", "steady_to_best_s_vs_sasrec"] == pytest.approx(0.9 / 0.4)


def test_tuning_compare_reads_the_committed_search_and_says_whether_the_ranking_changed(
        tmp_path):
    """On the committed ML-1M search (results/study/tuning): the tuned final seeds against the
    study sweep's untuned cells; a sweep with none of those cells is an error, not a table."""
    from benchmarks import tuning_compare
    args = ["--tuned", "results/study/tuning/final/sweep", "--search",
            "results/study/tuning/search", "--out", str(tmp_path)]
    tuning_compare.main([*args, "--untuned", "results/study/sweep"])
    table = pd.read_csv(tmp_path / "compare.csv")
    assert sorted(zip(table["setting"], table["model"])) == [
        ("tuned", "sasrec"), ("tuned", "xlstm"), ("untuned", "sasrec"), ("untuned", "xlstm")]
    assert set(table["n_seeds"]) == {3}
    assert (table[table["setting"] == "untuned"]["lr"] == 1e-3).all()   # the study's setting
    text = (tmp_path / "compare.md").read_text()
    assert "ranking changed" in text and "sasrec − xlstm" in text
    with pytest.raises(SystemExit, match="no completed cell"):
        tuning_compare.main([*args, "--untuned", "results/study/ml-100k/sweep"])


def test_xlstm_shapes_records_a_shape_that_fails_without_stopping(tmp_path):
    """benchmarks.xlstm_shapes: each shape trains one step in a child of its own; a shape the
    model refuses (or a compiler that aborts) is a row with its exit status and error, and the
    other rows still run."""
    from benchmarks import xlstm_shapes
    table = xlstm_shapes.main(["--device", "cpu", "--dims", "32", "--heads", "2",
                               "--precisions", "fp32", "--max-len", "20", "--out", str(tmp_path)])
    assert table["trains"].tolist() == [True] and table["last_line"][0] == "ok (8, 20, 32)"
    refused = xlstm_shapes.probe("cuda", 32, 4, 1, 20, "fp32", timeout=120)
    assert refused["exit"] == 1 and not refused["trains"]
    assert "query/key head dim >= 16, got 4" in refused["last_line"]
    assert "| 32 " in (tmp_path / "xlstm_shapes.md").read_text()


def test_eval_speed_times_the_trainers_evaluation_and_appends_a_row_per_run(tmp_path, mirror):
    from benchmarks import eval_speed
    for label in ("before", "after"):
        assert eval_speed.main(["--dataset", "ml-100k", "--max-len", "20", "--repeats", "1",
                                "--device", "cpu", "--label", label, "--work",
                                str(tmp_path / "w"), "--out", str(tmp_path / "out")]) == 0
    rows = pd.read_csv(tmp_path / "out" / "eval_speed.csv")
    assert rows["label"].tolist() == ["before", "after"]
    assert (rows["users"] == 943).all() and (rows["items"] == 1682).all()
    assert (rows["eval_s"] > 0).all() and (rows["ranks_batch_s"] > 0).all()
    assert rows["val_recall@10"].nunique() == 1          # same seed, same untrained model
    assert "| after" in (tmp_path / "out" / "eval_speed.md").read_text()


def test_sasrec_encoder_counts_each_variants_operations_on_the_cpu(tmp_path):
    """benchmarks/sasrec_encoder.py on the CPU: a row per variant, with the same encoder
    output; the batch-first attention dispatches fewer operations and copies, the positions'
    matmul one embedding backward fewer (each a dozen kernels on CUDA), the weights cast once
    40 copies fewer."""
    from benchmarks import sasrec_encoder
    assert sasrec_encoder.main(["--device", "cpu", "--items", "300", "--batch", "8",
                                "--heads", "1", "--out-dir", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "sasrec_encoder.csv")
    assert list(table["variant"]) == ["module attention, position lookup",
                                      "batch-first attention, position lookup",
                                      "batch-first attention, position matmul",
                                      "+ weights cast once"]
    assert table["ops"][1] < table["ops"][0] and table["copies"][1] < table["copies"][0]
    assert table["copies"][3] == table["copies"][2] - 40
    assert list(table["embedding_backwards"]) == [2, 2, 1, 1]
    assert (table["max_abs_diff"] == 0).all() and "kernels" not in table
