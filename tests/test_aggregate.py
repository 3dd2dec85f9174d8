"""`python -m launcher aggregate` on a tiny constructed sweep: formats, values, paired tests,
failed/missing cells, corrupt files, compute hours, the cache, where states come from."""
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from launcher.__main__ import main as launcher_main
from launcher.grid import expand, load_grid
from launcher.sweep import Sweep
from recsys_core.train.results import read_result, write_history, write_result

GRID = """
name: tiny
fixed: {epochs: 3, embedding_dim: 16}
grid:
  model: [sasrec, gru4rec, pop]
  dataset: [synthetic, ml-100k]
  max_len: [10, 20]
  seed: [1, 2, 3]
resources: {gpus: 1, nodes: 2, cpus: 4}
overrides:
  - when: {model: pop}
    set: {resources: {gpus: 0}}
"""
BASE = {"sasrec": 0.30, "gru4rec": 0.25, "pop": 0.10}
FAILED = ("gru4rec", "synthetic", 10, 3)       # → sasrec/gru4rec share seeds 1, 2 there
MISSING = ("pop", "synthetic", 20, 2)
ONE_SEED = [("gru4rec", "ml-100k", 20, 2), ("gru4rec", "ml-100k", 20, 3)]   # FAILED too
CORRUPT = ("sasrec", "ml-100k", 10, 1)


def recall(model, dataset, max_len, seed):
    wobble = ((seed * 7 + max_len) % 5) * 0.01 + (0.02 if dataset == "ml-100k" else 0)
    own = {"sasrec": 0, "gru4rec": 0.002 * seed, "pop": 0.003 * seed ** 2}[model]
    return BASE[model] + wobble + own


def key(cell):
    p = cell.params
    return p["model"], p["dataset"], p["max_len"], p["seed"]


def wall(cell):
    return 100.0 * (1 + cell.params["seed"]) + cell.params["max_len"]


@pytest.fixture
def sweep(tmp_path):
    return build_sweep(tmp_path, GRID)


def build_sweep(tmp_path, grid_text, later=None):
    """The sweep of grid_text; `later`: (grid text, cell filter) whose cells a later
    `--extend` added (the study's BERT4Rec on ML-1M at a second epoch cap)."""
    grid_file = tmp_path / "tiny.yaml"
    grid_file.write_text(grid_text)
    cells = expand(load_grid(grid_file))
    if later:
        (tmp_path / "later.yaml").write_text(later[0])
        cells += [c for c in expand(load_grid(tmp_path / "later.yaml")) if later[1](c)]
    sw = Sweep.create(tmp_path / "sweep", grid_file, "tiny", cells, "local")
    for c in cells:
        k, out = key(c), sw.cell_dir(c.id)
        if k == MISSING:
            continue
        r = recall(*k) + (0.05 if c.params.get("epochs") == 6 else 0)   # a longer cap's gain
        record = {**c.params, "status": "COMPLETED", "reason": None, "test_recall@10": r,
                  "test_ndcg@10": r * 0.6, "test_mrr@10": r * 0.5, "val_recall@10": r,
                  "params_total": 1000 if k[0] != "pop" else 0, "wall_time_s": wall(c),
                  "epoch_time_s": None if k[0] == "pop" else 2.0 + k[2] / 10, "ks": [5, 10, 20],
                  "best_epoch": None if k[0] == "pop" else 1 + k[3] % 3}
        if k == FAILED or k in ONE_SEED:
            record.update({"status": "FAILED", "reason": "Traceback ...\nRuntimeError: boom",
                           "test_recall@10": None})
        if k[0] == "sasrec" and k[3] == 2:   # schemas differ between cells
            record.update(params_total=1000.0, peak_gpu_mem_mb=None, extra_field="x")
        if k[0] == "sasrec":   # the curve inside the result, as the trainer writes it now
            record["val_recall@10_by_epoch"] = [r * e / 3 for e in (1, 2, 3)]
        write_result(out, record)
        if k[0] != "pop":
            write_history(out, [{"epoch": e, "train_loss": 1.0 / e, "val_recall@10": r * e / 3}
                                for e in (1, 2, 3)])
        if k == CORRUPT:
            data = (out / "result.json").read_bytes()
            (out / "result.json").write_bytes(data[: len(data) // 2])
    return sw


def aggregate(sweep, tmp_path, plots=False):
    out = tmp_path / "agg"
    args = ["aggregate", str(sweep.root), "--out", str(out)] + ([] if plots else ["--no-plots"])
    assert launcher_main(args) == 0
    return out


def md_rows(path):
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    assert set(lines[1]) <= set("|-")
    rows = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[:1] + lines[2:]]
    assert all(len(r) == len(rows[0]) == lines[1].strip("|").count("|") + 1 for r in rows)
    return rows[0], rows[1:]


def test_every_table_in_every_format_and_the_plots(sweep, tmp_path):
    out = aggregate(sweep, tmp_path, plots=True)
    for name in ("main", "overview", "paired", "cost", "compute", "cells", "states"):
        csv = pd.read_csv(out / f"{name}.csv")
        header, rows = md_rows(out / f"{name}.md")
        assert len(rows) == len(csv) > 0
        tex = (out / f"{name}.tex").read_text()
        body = tex.split("\\midrule\n")[1].split("\\bottomrule")[0].strip().splitlines()
        assert tex.count("\\begin{tabular}") == 1 and len(body) == len(csv)
        assert all(line.count(" & ") == len(header) - 1 for line in body)
    cells = pd.read_csv(out / "cells.csv")
    assert len(cells) == 36
    for png in ("curves", "recall_vs_max_len", "accuracy_vs_time"):
        assert (out / f"{png}.png").read_bytes()[:4] == b"\x89PNG"
    assert "## Results" in (out / "summary.md").read_text()


def test_one_parquet_file_of_every_cell_config_and_result(sweep, tmp_path):
    out = aggregate(sweep, tmp_path)
    cells = {key(c): c for c in sweep.cells()}
    df = pd.read_parquet(out / "results.parquet").set_index("id")
    assert len(df) == 36 and set(df.index) == {c.id for c in cells.values()}
    assert list(df.columns[:3]) == ["name", "state", "reason"]
    assert (df["embedding_dim"] == 16).all() and (df["lr"] == 0.001).all()   # set; default
    done = cells[("sasrec", "synthetic", 20, 2)]
    assert df.loc[done.id, "test_recall@10"] == pytest.approx(recall("sasrec", "synthetic", 20, 2))
    assert list(df.loc[done.id, "val_recall@10_by_epoch"]) == pytest.approx(
        [recall("sasrec", "synthetic", 20, 2) * e / 3 for e in (1, 2, 3)])
    assert df.loc[done.id, "extra_field"] == "x"        # a field only some results have
    missing = df.loc[cells[MISSING].id]
    assert missing["state"] == "MISSING" and pd.isna(missing["wall_time_s"])
    assert missing["model"] == "pop" and missing["max_len"] == 20


def test_main_table_means_stds_and_best_per_dataset(sweep, tmp_path):
    out = aggregate(sweep, tmp_path)
    main = pd.read_csv(out / "main.csv")
    assert list(main.columns[:3]) == ["model", "dataset", "max_len"]
    assert "embedding_dim" not in main.columns   # the same in every cell
    row = main[(main.model == "sasrec") & (main.dataset == "synthetic") & (main.max_len == 20)].iloc[0]
    values = [recall("sasrec", "synthetic", 20, s) for s in (1, 2, 3)]
    assert row["test_recall@10_mean"] == pytest.approx(np.mean(values))
    assert row["test_recall@10_std"] == pytest.approx(np.std(values, ddof=1))
    assert row["test_ndcg@10_mean"] == pytest.approx(0.6 * np.mean(values))
    assert row["n_seeds"] == 3 and row["epoch_time_s"] == pytest.approx(4.0)
    for dataset, grp in main.groupby("dataset"):   # ties (sasrec L10 = L20 here) all marked
        top = grp["test_recall@10_mean"] == grp["test_recall@10_mean"].max()
        assert (grp["test_recall@10_best"] == top).all() and top.sum() >= 1
    header, rows = md_rows(out / "main.md")
    bold = [(r[0], r[1], r[2]) for r in rows if r[header.index("Recall@10")].startswith("**")]
    expected = [(b.model, b.dataset, str(b.max_len)) for b in main[main["test_recall@10_best"]].itertuples()]
    assert sorted(bold) == sorted(expected)
    assert (out / "main.tex").read_text().count("\\textbf{") == main.filter(like="_best").to_numpy().sum()


def test_rendered_numbers_are_the_csv_numbers(sweep, tmp_path):
    """Every mean ± std shown in main.md and main.tex is main.csv's mean and std of that row
    and metric, in that order (a swap or a wrong column would show here)."""
    out = aggregate(sweep, tmp_path)
    main = pd.read_csv(out / "main.csv")
    header, rows = md_rows(out / "main.md")
    tex = (out / "main.tex").read_text().split("\\midrule\n")[1].split("\\bottomrule")[0]
    tex_rows = [[c.strip() for c in line.removesuffix(r"\\").split(" & ")]
                for line in tex.strip().splitlines()]
    shown = 0
    for i, row in enumerate(main.itertuples()):
        for metric, label in (("test_recall@10", "Recall@10"), ("test_ndcg@10", "NDCG@10"),
                              ("test_mrr@10", "MRR@10")):
            mean, std = main.loc[i, f"{metric}_mean"], main.loc[i, f"{metric}_std"]
            md = rows[i][header.index(label)].strip("*")
            tx = tex_rows[i][header.index(label)].replace("\\textbf{", "").rstrip("}")
            if pd.isna(mean):
                assert md == "n/a"
                continue
            expected = f"{mean:.4f}" + ("" if pd.isna(std) else f" ± {std:.4f}")
            assert md == expected, (i, label)
            assert tx == expected.replace("±", "$\\pm$"), (i, label)
            shown += 1
        assert rows[i][header.index("n_seeds")] == str(main.loc[i, "n_seeds"])
    assert shown >= 3 * 10


def test_paired_tests_equal_scipy(sweep, tmp_path):
    paired = pd.read_csv(aggregate(sweep, tmp_path) / "paired.csv")
    row = paired[(paired.dataset == "synthetic") & (paired.max_len == 10) &
                 (paired.model == "gru4rec") & (paired.metric == "Recall@10")].iloc[0]
    assert row["best"] == "sasrec" and row["n_shared_seeds"] == 2
    a = np.array([recall("sasrec", "synthetic", 10, s) for s in (1, 2)])
    b = np.array([recall("gru4rec", "synthetic", 10, s) for s in (1, 2)])
    t, p = stats.ttest_rel(a, b)
    d = a - b
    half = stats.t.ppf(0.975, 1) * d.std(ddof=1) / math.sqrt(2)
    assert row["t"] == pytest.approx(t) and row["p_value"] == pytest.approx(p)
    assert row["mean_diff"] == pytest.approx(d.mean())
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half))
    three = paired[(paired.dataset == "ml-100k") & (paired.max_len == 10) &
                   (paired.model == "pop") & (paired.metric == "NDCG@10")].iloc[0]
    # sasrec's seed 1 there is unreadable: seeds 2, 3 are shared
    a = np.array([0.6 * recall("sasrec", "ml-100k", 10, s) for s in (2, 3)])
    b = np.array([0.6 * recall("pop", "ml-100k", 10, s) for s in (2, 3)])
    assert three["n_shared_seeds"] == 2
    assert three["p_value"] == pytest.approx(stats.ttest_rel(a, b).pvalue)


def test_fewer_than_two_shared_seeds_is_na(sweep, tmp_path):
    out = aggregate(sweep, tmp_path)
    paired = pd.read_csv(out / "paired.csv")
    one = paired[(paired.dataset == "ml-100k") & (paired.max_len == 20) & (paired.model == "gru4rec")]
    assert len(one) == 3 and (one["n_shared_seeds"] == 1).all()
    assert one[["ci_low", "ci_high", "t", "p_value"]].isna().all().all()
    header, rows = md_rows(out / "paired.md")
    shown = [r for r in rows if r[header.index("model")] == "gru4rec" and r[0] == "ml-100k" and r[1] == "20"]
    assert all(r[header.index("95% CI")] == "n/a" and r[header.index("p")] == "n/a" for r in shown)


def test_failed_missing_and_corrupt_cells_are_counted_never_dropped(sweep, tmp_path, capsys):
    out = aggregate(sweep, tmp_path)
    err = capsys.readouterr().err
    cells = pd.read_csv(out / "cells.csv")
    states = dict(pd.read_csv(out / "states.csv").values)
    assert states == {"COMPLETED": 31, "FAILED": 4, "MISSING": 1, "all": 36}
    by_key = {(r.model, r.dataset, r.max_len, r.seed): r for r in cells.itertuples()}
    assert by_key[MISSING].state == "MISSING"
    assert by_key[FAILED].state == "FAILED" and by_key[FAILED].reason == "RuntimeError: boom"
    corrupt = by_key[CORRUPT]
    corrupt_path = str(sweep.cell_dir(corrupt.id) / "result.json")
    assert corrupt.state == "FAILED" and "unreadable" in corrupt.reason
    assert corrupt_path in err and corrupt_path in (out / "summary.md").read_text()
    main = pd.read_csv(out / "main.csv", dtype={"incomplete": object})
    main["incomplete"] = main["incomplete"].fillna("")
    incomplete = {(r.model, r.dataset, r.max_len): r.incomplete for r in main.itertuples()}
    assert incomplete[FAILED[:3]] == "1 FAILED" and incomplete[MISSING[:3]] == "1 MISSING"
    assert incomplete[ONE_SEED[0][:3]] == "2 FAILED"
    assert incomplete[("sasrec", "synthetic", 10)] == ""


def test_gpu_and_cpu_hours(sweep, tmp_path):
    out = aggregate(sweep, tmp_path)
    cells = pd.read_csv(out / "cells.csv")
    timed = cells[cells.state.isin(["COMPLETED", "FAILED"]) & cells.wall_time_s.notna()]
    assert (timed.gpu_hours == timed.wall_time_s * timed.gpus * 2 / 3600).all()
    assert (timed.cpu_hours == timed.wall_time_s * 4 * 2 / 3600).all()
    compute = pd.read_csv(out / "compute.csv").set_index("model")
    assert compute.loc["pop", "gpu_hours"] == 0 and compute.loc["pop", "cpu_hours"] > 0
    expected = {m: cells[cells.model == m].gpu_hours.sum() for m in BASE}
    for m, hours in expected.items():
        assert compute.loc[m, "gpu_hours"] == pytest.approx(hours)
    assert compute.loc["all", "gpu_hours"] == pytest.approx(sum(expected.values()))
    assert compute.loc["all", "cells"] == 36


def test_cost_table_is_accuracy_against_time_per_configuration(sweep, tmp_path):
    out = aggregate(sweep, tmp_path)
    main, cost = pd.read_csv(out / "main.csv"), pd.read_csv(out / "cost.csv")
    assert len(cost) == len(main)
    assert cost["test_recall@10_mean"].equals(main["test_recall@10_mean"])
    cells = pd.read_csv(out / "cells.csv").merge(
        pd.read_parquet(out / "results.parquet")[["id", "best_epoch"]], on="id")
    done = cells[(cells.state == "COMPLETED") & (cells.model != "pop")]
    row = cost[cost.model == "sasrec"].iloc[0]
    group = done[(done.model == "sasrec") & (done.dataset == row.dataset) &
                 (done.max_len == row.max_len)]
    assert len(group) == row.n_seeds > 0
    assert row.time_to_best_s == pytest.approx((group.best_epoch * group.epoch_time_s).mean())
    assert row.gpu_s == pytest.approx((group.gpu_hours * 3600).mean())
    assert row.wall_s == pytest.approx(group.wall_time_s.mean())


def test_cost_table_takes_the_recorded_time_to_best_and_steady_epoch_where_results_hold_them(
        sweep, tmp_path):
    """Results since session 13 record the seconds up to the best epoch and the median epoch
    (a first epoch that compiles kernels inflates the mean); older ones fall back to
    best epoch × mean epoch, as the test above checks."""
    recorded = {}
    for c in sweep.cells():
        out = sweep.cell_dir(c.id)
        if c.params["model"] != "gru4rec" or not (out / "result.json").exists():
            continue
        record = json.loads((out / "result.json").read_text())
        if record["status"] != "COMPLETED":
            continue
        record.update(time_to_best_s=10.0 + c.params["seed"], epoch_time_median_s=0.5)
        write_result(out, record)
        recorded.setdefault((record["dataset"], record["max_len"]), []).append(record)
        # seeds timed on different machines (a study's calls on an H200, then an H100)
        record["device"] = "GPU B" if c.params["seed"] == 2 else "GPU A"
        write_result(out, record)
    cost = pd.read_csv(aggregate(sweep, tmp_path) / "cost.csv")
    rows = cost[cost.model == "gru4rec"]
    assert len(rows) == len(recorded) > 0
    for row in rows.itertuples():
        seeds = [r["seed"] for r in recorded[(row.dataset, row.max_len)]]
        b, a = seeds.count(2), len(seeds) - seeds.count(2)
        if a and b:      # each machine with its count, the most used first
            assert set(row.devices.split(", ")) == {f"GPU A ×{a}", f"GPU B ×{b}"}
            assert row.devices.startswith("GPU A" if a >= b else "GPU B"), row.devices
        else:
            assert row.devices == ("GPU A" if a else "GPU B")
    assert all("×" not in d for d in cost[cost.model == "sasrec"]["devices"].dropna())
    for row in rows.itertuples():
        group = recorded[(row.dataset, row.max_len)]
        assert row.time_to_best_s == pytest.approx(np.mean([r["time_to_best_s"] for r in group]))
        assert row.epoch_time_median_s == 0.5
    assert cost[cost.model == "sasrec"]["epoch_time_median_s"].isna().all()


def test_a_changed_result_is_read_again(sweep, tmp_path):
    aggregate(sweep, tmp_path)
    assert any((sweep.root / ".aggregate-cache").iterdir())
    cell = next(c for c in sweep.cells() if key(c) == FAILED)
    write_result(sweep.cell_dir(cell.id), {**cell.params, "status": "COMPLETED", "test_recall@10": 0.99,
                                           "test_ndcg@10": 0.5, "test_mrr@10": 0.4, "wall_time_s": 1.0})
    cells = pd.read_csv(aggregate(sweep, tmp_path) / "cells.csv").set_index("id")
    assert cells.loc[cell.id, "state"] == "COMPLETED" and cells.loc[cell.id, "test_recall@10"] == 0.99


def test_states_from_the_launcher_status_when_submitted(sweep, tmp_path, monkeypatch):
    from launcher.executors import slurm
    sweep.record_submissions([{"cell": c.id, "executor": "local", "job_id": None, "time": 0}
                               for c in sweep.cells()])
    cells = pd.read_csv(aggregate(sweep, tmp_path) / "cells.csv")
    missing = cells[[(r.model, r.dataset, r.max_len, r.seed) == MISSING for r in cells.itertuples()]]
    assert missing.state.item() == "NOT_STARTED"   # status: queued by a local launcher now gone
    assert "launcher status" in (tmp_path / "agg" / "summary.md").read_text()

    def unreachable(job_ids):
        raise slurm.SlurmError("sacct: cannot reach slurmdbd")
    monkeypatch.setattr(slurm, "sacct_states", unreachable)
    sweep.record_submissions([{"cell": c.id, "executor": "slurm", "job_id": "7_1", "time": 0}
                               for c in sweep.cells()])
    out = aggregate(sweep, tmp_path)
    assert "SLURM not reachable" in (out / "summary.md").read_text()
    assert dict(pd.read_csv(out / "states.csv").values)["MISSING"] == 1


def test_not_a_sweep_is_an_error(tmp_path, capsys):
    assert launcher_main(["aggregate", str(tmp_path)]) == 2
    assert "not a sweep directory" in capsys.readouterr().err
    # a file given where the sweep's folder goes (the grid file, say): one line, every verb
    grid = tmp_path / "grid.yaml"
    grid.write_text("name: g\n")
    for verb in ("aggregate", "status", "resume", "cancel"):
        assert launcher_main([verb, str(grid)]) == 2, verb
        err = capsys.readouterr().err
        assert f"{grid}: not a sweep directory" in err and "Traceback" not in err, verb
    assert grid.read_text() == "name: g\n"
    (tmp_path / "manifest.json").mkdir()       # unreadable: a folder where the manifest goes
    assert launcher_main(["status", str(tmp_path)]) == 2
    assert "manifest.json: cannot read the manifest: Is a directory" in capsys.readouterr().err


def test_a_sweep_without_any_result_yet(tmp_path):
    grid_file = tmp_path / "tiny.yaml"
    grid_file.write_text(GRID)
    sweep = Sweep.create(tmp_path / "empty", grid_file, "tiny", expand(load_grid(grid_file)), "slurm")
    out = aggregate(sweep, tmp_path, plots=True)
    assert dict(pd.read_csv(out / "states.csv").values) == {"MISSING": 36, "all": 36}
    main = pd.read_csv(out / "main.csv")
    assert len(main) == 12 and (main["n_seeds"] == 0).all() and (main["incomplete"] == "3 MISSING").all()
    assert len(pd.read_csv(out / "paired.csv")) == 0 and (out / "curves.png").exists()


def test_a_models_own_settings_keep_it_in_its_comparison_group(tmp_path):
    """A setting that only one model changes (an override: SASRec with 1 head) is shown in
    the main table but does not make a comparison group of its own: the paired tests still
    pit the best model against every other one."""
    grid = GRID + """  - when: {model: sasrec}
    set: {num_heads: 1}
"""
    out = aggregate(build_sweep(tmp_path, grid), tmp_path)
    main = pd.read_csv(out / "main.csv")
    assert "num_heads" in main.columns
    assert sorted(main[main.model == "sasrec"].num_heads.unique()) == [1]
    paired = pd.read_csv(out / "paired.csv")
    group = paired[(paired.dataset == "ml-100k") & (paired.max_len == 10)]
    assert set(group.best) == {"sasrec"} and set(group.model) == {"gru4rec", "pop"}


def test_overview_is_the_main_table_folded_to_models_by_datasets(sweep, tmp_path):
    out = aggregate(sweep, tmp_path)
    main, overview = pd.read_csv(out / "main.csv"), pd.read_csv(out / "overview.csv")
    assert list(overview.columns[:2]) == ["model", "max_len"]   # max_len varies in a dataset
    assert len(overview) == len(main[["model", "max_len"]].drop_duplicates())
    for _, row in main.iterrows():
        o = overview[(overview.model == row.model) & (overview.max_len == row.max_len)].iloc[0]
        assert o[f"{row.dataset}_mean"] == pytest.approx(row["test_recall@10_mean"], nan_ok=True)
    header, rows = md_rows(out / "overview.md")
    assert header[:2] == ["model", "max_len"] and len(rows) == len(overview)


def test_overview_leaves_out_keys_that_follow_the_dataset():
    from launcher.tables import overview_table
    main = pd.DataFrame({"model": ["a", "b", "a", "b"], "dataset": ["x", "x", "y", "y"],
                         "max_len": [200, 200, 50, 50],
                         "test_recall@10_mean": [0.3, 0.2, 0.1, 0.15],
                         "test_recall@10_std": [0.01, 0.02, 0.03, 0.04]})
    table, rows = overview_table(main, ["model", "dataset", "max_len"])
    assert rows == ["model"]
    assert table.to_dict("list") == {"model": ["a", "b"], "x_mean": [0.3, 0.2],
                                     "x_std": [0.01, 0.02], "y_mean": [0.1, 0.15],
                                     "y_std": [0.03, 0.04]}


def test_overview_splits_only_the_model_whose_setting_varies_inside_a_dataset():
    """The study's shape: BERT4Rec alone ran ML-1M at two epoch caps; every other model keeps
    one row across datasets whose caps differ (400 on x, 200 on y)."""
    from launcher.tables import overview_table
    main = pd.DataFrame({"model": ["a", "a", "b", "a", "b"], "dataset": ["x", "x", "x", "y", "y"],
                         "epochs": [400, 800, 400, 200, 200],
                         "test_recall@10_mean": [0.30, 0.32, 0.20, 0.10, 0.15],
                         "test_recall@10_std": [0.01, 0.01, 0.02, 0.03, 0.04]})
    table, rows = overview_table(main, ["model", "dataset", "epochs"])
    assert rows == ["model", "epochs"]
    assert table[["model", "epochs"]].values.tolist() == [["a", 400], ["a", 800], ["b", "–"],
                                                          ["a", 200]]
    assert table["x_mean"].fillna(-1).tolist() == [0.30, 0.32, 0.20, -1]
    assert table["y_mean"].fillna(-1).tolist() == [-1, -1, 0.15, 0.10]


def test_settings_that_follow_model_and_dataset_keep_every_model_in_the_group(tmp_path):
    """The study's shape: GRU4Rec and pop take 1 head on one dataset and 2 on the other, SASRec
    always 2 (its own override), and SASRec alone has two epoch caps on ml-100k (a variant:
    a row of its own, never averaged with the other). Every model still meets every other in
    one group per dataset and max_len; `--versus gru4rec` pits GRU4Rec against the rest."""
    grid = GRID + """  - when: {dataset: synthetic}
    set: {num_heads: 1}
  - when: {model: sasrec}
    set: {num_heads: 2}
"""
    later = grid + """  - when: {model: sasrec, dataset: ml-100k}
    set: {epochs: 6}
"""
    sweep = build_sweep(tmp_path, grid, (later, lambda c: c.params.get("epochs") == 6))
    assert len(sweep.cell_ids()) == 36 + 6
    out = tmp_path / "agg"
    assert launcher_main(["aggregate", str(sweep.root), "--out", str(out), "--no-plots",
                          "--versus", "gru4rec"]) == 0
    paired = pd.read_csv(out / "paired.csv")
    assert "num_heads" not in paired.columns
    r10 = paired[paired.metric == "Recall@10"]
    for (dataset, max_len), group in r10.groupby(["dataset", "max_len"]):
        assert set(group.best) | set(group.model) == {"sasrec", "gru4rec", "pop"}, (dataset, max_len)
    versus = pd.read_csv(out / "paired_vs_gru4rec.csv")
    v = versus[(versus.metric == "Recall@10") & (versus.dataset == "ml-100k") & (versus.max_len == 10)]
    assert set(v.reference) == {"gru4rec"} and set(v.model) == {"sasrec", "pop"}
    row = v[v.model == "pop"].iloc[0]
    seeds = [1, 2, 3]   # gru4rec and pop at ml-100k L 10: every seed completed
    diffs = [recall("gru4rec", "ml-100k", 10, s) - recall("pop", "ml-100k", 10, s) for s in seeds]
    assert row.mean_diff == pytest.approx(np.mean(diffs))
    assert row.p_value == pytest.approx(stats.ttest_rel(
        [recall("gru4rec", "ml-100k", 10, s) for s in seeds],
        [recall("pop", "ml-100k", 10, s) for s in seeds]).pvalue)
    assert "Paired t-tests: gru4rec vs others" in (out / "summary.md").read_text()
    sas = v[v.model == "sasrec"]        # SASRec's two caps: two rows, never averaged
    assert sorted(sas.epochs) == [3, 6]
    by_cap = sas.set_index("epochs").mean_diff
    assert by_cap[3] - by_cap[6] == pytest.approx(0.05)
    assert launcher_main(["aggregate", str(sweep.root), "--out", str(tmp_path / "x"),
                          "--versus", "xlstm"]) == 2
    assert not (tmp_path / "x").exists()


def tail_figures(model, dataset, max_len, seed):
    """A cell's long-tail fields as the trainer records them (recsys_core/train/recorded.py)."""
    r = recall(model, dataset, max_len, seed)
    return {"longtail_recall@10_head": 1.5 * r, "longtail_recall@10_mid": r,
            "longtail_recall@10_tail": r / (1 + seed), "longtail_users_tail": 40,
            "longtail_share_tail_in_top10": {"sasrec": 0.2, "gru4rec": 0.1, "pop": 0.0}[model]
            + 0.01 * seed, "longtail_coverage": 0.2 * seed + max_len / 100,
            "longtail_gini_recommendations": 0.9 - 0.1 * seed}


def test_a_longtail_table_where_cells_recorded_the_long_tail(sweep, tmp_path):
    """A sweep of cells trained before results held the long tail (the study's first sweep):
    no table. Once the synthetic cells have it (the failed one too), one row per configuration
    that has it: mean ± std over its completed seeds."""
    out = aggregate(sweep, tmp_path)
    assert not list(out.glob("longtail*"))
    assert "Long tail" not in (out / "summary.md").read_text()
    for c in sweep.cells():
        record = read_result(sweep.cell_dir(c.id)) if key(c)[1] == "synthetic" else None
        if record is not None:
            write_result(sweep.cell_dir(c.id), {**record, **tail_figures(*key(c))})
    out = tmp_path / "agg-tail"
    assert launcher_main(["aggregate", str(sweep.root), "--out", str(out), "--no-plots"]) == 0
    table = pd.read_csv(out / "longtail.csv")
    assert list(zip(table.model, table.dataset, table.max_len)) == [
        (m, "synthetic", L) for L in (10, 20) for m in ("sasrec", "gru4rec", "pop")]
    for row in table.to_dict("records"):
        model, max_len = row["model"], row["max_len"]
        seeds = [s for s in (1, 2, 3) if (model, "synthetic", max_len, s) not in (FAILED, MISSING)]
        assert row["n_seeds"] == len(seeds)
        figures = pd.DataFrame([tail_figures(model, "synthetic", max_len, s) for s in seeds])
        for field in ("recall@10_head", "recall@10_mid", "recall@10_tail",
                      "share_tail_in_top10", "coverage", "gini_recommendations"):
            values = figures[f"longtail_{field}"]
            assert row[f"{field}_mean"] == pytest.approx(values.mean())
            assert row[f"{field}_std"] == pytest.approx(values.std(ddof=1))
    header, rows = md_rows(out / "longtail.md")
    assert header[-7:] == ["Recall@10 head", "Recall@10 mid", "Recall@10 tail",
                           "tail share of top 10", "coverage", "Gini of recommendations", "n_seeds"]
    assert len(rows) == 6 and rows[0][header.index("coverage")] == "0.5000 ± 0.2000"
    assert (out / "longtail.tex").read_text().count(" \\\\\n") == 7    # header and 6 rows
    assert "## Long tail of the test split" in (out / "summary.md").read_text()


def test_a_geometry_table_where_cells_recorded_their_item_space(sweep, tmp_path):
    """The item-embedding geometry results record (recsys_core/train/recorded.py), per
    configuration like the long tail: pop records none, so it has no row; a sweep of cells
    trained before it has no table."""
    out = aggregate(sweep, tmp_path)
    assert not list(out.glob("geometry*"))

    def figures(model, dataset, max_len, seed):
        return {"geometry_dims_90": 10 + seed, "geometry_participation_ratio": 5.0 * seed,
                "geometry_anisotropy": 0.01 * seed + max_len / 1000,
                "geometry_hub_gini": 0.3 if model == "sasrec" else 0.4,
                "geometry_hub_skewness": 2.0 - seed / 10, "geometry_n_items": 60}
    for c in sweep.cells():
        record = read_result(sweep.cell_dir(c.id)) if key(c)[1] == "synthetic" else None
        if record is not None and key(c)[0] != "pop":
            write_result(sweep.cell_dir(c.id), {**record, **figures(*key(c))})
    out = tmp_path / "agg-geometry"
    assert launcher_main(["aggregate", str(sweep.root), "--out", str(out), "--no-plots"]) == 0
    table = pd.read_csv(out / "geometry.csv")
    assert list(zip(table.model, table.max_len)) == [(m, L) for L in (10, 20)
                                                     for m in ("sasrec", "gru4rec")]
    for row in table.to_dict("records"):
        seeds = [s for s in (1, 2, 3) if (row["model"], "synthetic", row["max_len"], s) != FAILED]
        want = pd.DataFrame([figures(row["model"], "synthetic", row["max_len"], s) for s in seeds])
        assert row["n_seeds"] == len(seeds)
        assert row["dims_90_mean"] == pytest.approx(want["geometry_dims_90"].mean())
        assert row["anisotropy_std"] == pytest.approx(want["geometry_anisotropy"].std(ddof=1))
    header, rows = md_rows(out / "geometry.md")
    assert header[-6:] == ["dims for 90% variance", "participation ratio", "anisotropy",
                           "hubness Gini", "hub skewness", "n_seeds"]
    assert len(rows) == 4 and rows[0][header.index("hubness Gini")] == "0.3000 ± 0.0000"
    assert "## Item-embedding geometry of the best model" in (out / "summary.md").read_text()


def test_several_sweeps_aggregate_as_one_and_where_picks_cells(tmp_path, capsys):
    """`aggregate A B --out D`: the cells of both sweeps in one set of tables (a study grown
    over several grids); a cell copied into both (--reuse: the same id) counts once, from A,
    unless only B's COMPLETED.
    `--where`: only the matching cells."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = build_sweep(tmp_path / "a", GRID)
    second = build_sweep(tmp_path / "b", GRID.replace("max_len: [10, 20]", "max_len: [10, 30]"))
    shared = {c["id"] for c in first.manifest()["cells"]} & \
        {c["id"] for c in second.manifest()["cells"]}
    assert len(shared) == 18                   # max_len 10: the same cells
    copy = read_result(second.cell_dir(sorted(shared)[0]))
    write_result(second.cell_dir(sorted(shared)[0]), {**copy, "test_recall@10": 0.99})
    out = tmp_path / "both"
    assert launcher_main(["aggregate", str(first.root), str(second.root), "--out", str(out),
                          "--no-plots"]) == 0
    cells = pd.read_parquet(out / "results.parquet")
    assert len(cells) == 36 + 36 - 18 and cells["id"].is_unique
    assert sorted(cells["max_len"].unique()) == [10, 20, 30]
    assert 0.99 not in cells["test_recall@10"].tolist()
    # ... unless it FAILED in A and COMPLETED in B (a cell run again in another sweep)
    other = sorted(shared)[1]
    write_result(first.cell_dir(other), {**read_result(first.cell_dir(other)), "status": "FAILED"})
    write_result(second.cell_dir(other), {**read_result(second.cell_dir(other)),
                                          "test_recall@10": 0.77})
    again = tmp_path / "again"
    assert launcher_main(["aggregate", str(first.root), str(second.root), "--out", str(again),
                          "--no-plots"]) == 0
    row = pd.read_parquet(again / "results.parquet").set_index("id").loc[other]
    assert row["state"] == "COMPLETED" and row["test_recall@10"] == 0.77
    header, rows = md_rows(out / "main.md")
    assert {r[header.index("max_len")] for r in rows} == {"10", "20", "30"}

    picked = tmp_path / "picked"
    assert launcher_main(["aggregate", str(first.root), str(second.root), "--out", str(picked),
                          "--no-plots", "--where", "model=sasrec", "--where", "max_len=20,30"]) == 0
    cells = pd.read_parquet(picked / "results.parquet")
    assert set(cells["model"]) == {"sasrec"} and sorted(cells["max_len"].unique()) == [20, 30]
    assert len(cells) == 12

    capsys.readouterr()
    assert launcher_main(["aggregate", str(first.root), str(second.root), "--no-plots"]) == 2
    assert "need --out" in capsys.readouterr().err
    assert launcher_main(["aggregate", str(first.root), "--out", str(tmp_path / "x"),
                          "--where", "colour=red"]) == 2
    assert "has no parameter 'colour'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    # 20 is in the first sweep only, 30 in the second only: fine; 31 in none is a typo
    assert launcher_main(["aggregate", str(first.root), str(second.root), "--out",
                          str(tmp_path / "x"), "--where", "max_len=20,31"]) == 2
    assert "has max_len in [31]" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
