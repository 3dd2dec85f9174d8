"""`python -m launcher aggregate SWEEP [--out DIR] [--no-plots]`: a sweep's results → the study's
tables (Markdown, CSV, LaTeX) and plots, in OUT (default SWEEP/aggregate):

    main       model × dataset × max_len (× every other parameter that varies, but the seed):
               test Recall/NDCG/MRR@10 mean ± std over seeds, n_seeds, parameters, epoch time,
               the cells that did not complete; the best mean per dataset in bold (md, tex) or
               flagged in `<metric>_best` (csv)
    paired     per dataset and configuration, the best model (mean test Recall@10) against every
               other: paired t-test over the seeds both completed, 95% CI of the mean difference
    compute    GPU-hours (wall time × gpus × nodes) and CPU-hours per model and in all
    cells      every cell: state, reason, metrics, wall time, GPU- and CPU-hours
    states     cells per state: COMPLETED, FAILED, CANCELLED, MISSING, ...
    summary.md all of it, plus every result file that could not be read
    *.png      validation curves, Recall@10 against max_len, accuracy against epoch time (plots.py)

Cells and their parameters come from the manifest; everything else from every cell's
result.json through `recsys_core.train.results.read_results` (one pyarrow JSON parse over all
files; an unreadable file is reported by name and its cell counted FAILED; the rows are cached
in SWEEP/.aggregate-cache/ by file size and mtime, so aggregating again decodes only new or
changed files); states from the launcher's status when the sweep was submitted and SLURM
answers, else from the result files (a cell without one is MISSING).
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from launcher.sweep import Sweep
from recsys_core.render import latex_table, markdown_table
from recsys_core.train.config import TrainConfig
from recsys_core.train.results import read_results

METRICS = {"test_recall@10": "Recall@10", "test_ndcg@10": "NDCG@10", "test_mrr@10": "MRR@10"}
DEFAULTS = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(TrainConfig)}
# Parameters that do not change what is trained (those TrainConfig.hash skips): never a column.
NOT_CONFIG = {"seed", "out", "data_mirror", "wandb_mode", "wandb_project", "wandb_entity",
              "wandb_group", "run_id", "tensorboard", "device", "epoch_sleep_s", "inject_fault",
              "eval_batch_size"}
ALWAYS = ("model", "dataset", "max_len")
CACHE = ".aggregate-cache"


@dataclass
class Aggregate:
    name: str
    root: Path
    cells: pd.DataFrame                 # one row per manifest cell, manifest order
    keys: list[str]                     # configuration columns: model, dataset, max_len, ...
    state_source: str
    problems: dict[str, str] = field(default_factory=dict)   # unreadable file → why

    @property
    def compare_keys(self) -> list[str]:
        """The keys that define a comparison group (the paired tests): every configuration
        key but the model and the model's own settings, i.e. keys with one value per model
        (an override such as SASRec's 1 head against the others' 2 belongs to the model and
        must not put it in a group of its own)."""
        own = [k for k in self.keys[len(ALWAYS):]
               if self.cells.groupby("model", sort=False)[k].nunique(dropna=False).max() == 1]
        return [k for k in self.keys if k != "model" and k not in own]


# --- reading ----------------------------------------------------------------------------------

def _manifest_frame(manifest: dict) -> tuple[pd.DataFrame, list[str]]:
    """Cells with their resources and parameters (the TrainConfig default where a cell does
    not set one); and the configuration keys: model, dataset, max_len and every other
    parameter that takes more than one value, but the seed and those in NOT_CONFIG."""
    names = list(dict.fromkeys(k for c in manifest["cells"] for k in c["params"]))
    rows = []
    for c in manifest["cells"]:
        r = c["resources"]
        row = {"id": c["id"], "name": c["name"], "gpus": r.get("gpus") or 0,
               "nodes": r.get("nodes") or 1, "cpus": r.get("cpus")}
        for k in (*ALWAYS, "seed", *names):
            v = c["params"].get(k, DEFAULTS.get(k))
            row[k] = json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v
        rows.append(row)
    cells = pd.DataFrame(rows)
    varying = [k for k in names if k not in NOT_CONFIG and k not in ALWAYS
               and cells[k].nunique(dropna=False) > 1]
    extra = [k for k in names if k not in (*ALWAYS, "seed", *varying)]
    return cells.drop(columns=extra), [*ALWAYS, *varying]


def _states(sweep: Sweep, results: pd.DataFrame) -> tuple[dict[str, tuple], str]:
    """cell id → (state, reason): the launcher's status where SLURM (or a local run) can be
    asked, else the result files."""
    if sweep.latest_submissions():
        from launcher import slurm
        from launcher.status import cell_states
        try:
            rows = cell_states(sweep)
            return {r["id"]: (r["state"], r["reason"]) for r in rows}, "launcher status"
        except (slurm.SlurmError, OSError) as e:
            note = f"SLURM not reachable ({type(e).__name__}: {e}); states from the result files"
    else:
        note = "never submitted; states from the result files"
    return dict(zip(results["cell"], zip(results["status"], results["reason"]))), note


def load(sweep_root: str | Path) -> Aggregate:
    sweep = Sweep(sweep_root)
    manifest = sweep.manifest()
    cells, keys = _manifest_frame(manifest)
    results, problems = read_results(sweep.root / "cells", cells["id"], sweep.root / CACHE)
    states, source = _states(sweep, results)
    # the configuration is the manifest's; the result adds everything else
    results = results.drop(columns=[c for c in results.columns if c in cells.columns])
    cells = cells.merge(results, how="left", left_on="id", right_on="cell").drop(columns="cell")
    state, reason = [], []
    unreadable = {Path(p).parent.name: e for p, e in problems.items()}
    for cid, status in zip(cells["id"], cells["status"]):
        s, r = states.get(cid, ("MISSING", None))
        if cid in unreadable:
            s, r = "FAILED", f"result.json unreadable: {unreadable[cid]}"
        elif s == "COMPLETED" and status != "COMPLETED":
            s, r = "FAILED", "COMPLETED by the launcher's status but result.json says " + str(status)
        state.append(s if isinstance(s, str) else "MISSING")
        reason.append(r if isinstance(r, str) else None)
    cells["state"], cells["reason"] = state, reason
    cells.loc[cells["state"] != "COMPLETED", list(METRICS)] = np.nan
    wall = cells["wall_time_s"].fillna(0.0)
    cells["gpu_hours"] = wall * cells["gpus"] * cells["nodes"] / 3600
    cells["cpu_hours"] = wall * cells["cpus"].fillna(1).astype(float) * cells["nodes"] / 3600
    return Aggregate(manifest.get("name", sweep.root.name), sweep.root, cells, keys, source,
                     problems)


# --- tables -----------------------------------------------------------------------------------

def _order(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """Rows sorted by cols: numbers by value, anything else by first appearance."""
    sort = pd.DataFrame(index=df.index)
    for c in cols:
        numeric = pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
        sort[c] = df[c] if numeric else pd.factorize(df[c])[0]
    return df.loc[sort.sort_values(cols, kind="stable").index].reset_index(drop=True)


def main_table(agg: Aggregate) -> pd.DataFrame:
    cells, keys = agg.cells, agg.keys
    done = cells[cells["state"] == "COMPLETED"]
    groups = cells.groupby(keys, sort=False, dropna=False)
    table = groups.size().rename("n_cells").to_frame()
    g = done.groupby(keys, sort=False, dropna=False)
    table["n_seeds"] = g.size()
    for m in METRICS:
        table[f"{m}_mean"] = g[m].mean()
        table[f"{m}_std"] = g[m].std(ddof=1)
    table["params_total"] = g["params_total"].median()
    table["epoch_time_s"] = g["epoch_time_s"].mean()
    bad = cells[cells["state"] != "COMPLETED"].groupby(keys + ["state"], sort=False,
                                                       dropna=False).size()
    notes: dict[tuple, list[str]] = {}
    for idx, n in bad.items():
        notes.setdefault(idx[:-1], []).append(f"{n} {idx[-1]}")
    table["incomplete"] = [", ".join(notes.get(i, [])) for i in table.index]
    table = table.reset_index()
    table["n_seeds"] = table["n_seeds"].fillna(0).astype(int)
    table = _order(table, ["dataset", "max_len", *keys[3:], "model"])
    for m in METRICS:   # the best mean per dataset, ties all marked
        best = table.groupby("dataset", sort=False)[f"{m}_mean"].transform("max")
        table[f"{m}_best"] = table[f"{m}_mean"].notna() & (table[f"{m}_mean"] == best)
    return table


def paired_tests(agg: Aggregate, main: pd.DataFrame) -> pd.DataFrame:
    """Per comparison group (`Aggregate.compare_keys`), the best model by mean test Recall@10
    against each other model, over the seeds both completed: the paired t-test (the statistic
    of scipy.stats.ttest_rel, for all pairs at once) and the t-based 95% CI of the
    mean difference best − model. Under 2 shared seeds: n/a."""
    from scipy.special import stdtr, stdtrit   # the t distribution (scipy.stats: 2 s to import)
    cmp_keys = agg.compare_keys
    done = agg.cells[agg.cells["state"] == "COMPLETED"]
    per_seed = done.groupby(cmp_keys + ["model", "seed"], sort=False)[list(METRICS)].mean()
    per_seed = per_seed.reset_index()
    ranked = main[main["test_recall@10_mean"].notna()]
    best = ranked.loc[ranked.groupby(cmp_keys, sort=False)["test_recall@10_mean"].idxmax(),
                      cmp_keys + ["model"]].rename(columns={"model": "best"})
    best_values = per_seed.merge(best, left_on=cmp_keys + ["model"],
                                 right_on=cmp_keys + ["best"]).drop(columns=["model", "best"])
    pairs = per_seed.merge(best, on=cmp_keys)
    pairs = pairs[pairs["model"] != pairs["best"]].merge(
        best_values, on=cmp_keys + ["seed"], how="left", suffixes=("", "_best"))
    rank = main.reset_index()[cmp_keys + ["model", "index"]]
    out = []
    for m, label in METRICS.items():
        diff = pairs.assign(d=pairs[f"{m}_best"] - pairs[m])
        g = diff.groupby(cmp_keys + ["best", "model"], sort=False)["d"]
        t = g.agg(n_shared_seeds="count", mean_diff="mean", sd="std").reset_index()
        n = t["n_shared_seeds"].to_numpy(dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            se = t["sd"].to_numpy() / np.sqrt(n)
            t["t"] = np.where(n >= 2, t["mean_diff"] / se, np.nan)
            t["p_value"] = np.where(n >= 2, 2 * stdtr(n - 1, -np.abs(t["t"])), np.nan)
            half = stdtrit(n - 1, 0.975) * se
        t["ci_low"] = np.where(n >= 2, t["mean_diff"] - half, np.nan)
        t["ci_high"] = np.where(n >= 2, t["mean_diff"] + half, np.nan)
        out.append(t.assign(metric=label, metric_order=len(out)))
    cols = cmp_keys + ["best", "model", "metric", "n_shared_seeds", "mean_diff", "ci_low",
                       "ci_high", "t", "p_value"]
    if not out or not len(pairs):
        return pd.DataFrame(columns=cols)
    table = pd.concat(out).merge(rank, on=cmp_keys + ["model"])
    return table.sort_values(["index", "metric_order"], kind="stable")[cols].reset_index(drop=True)


def compute_table(agg: Aggregate) -> pd.DataFrame:
    cells = agg.cells
    cells = cells.assign(wall_hours=cells["wall_time_s"].fillna(0) / 3600,
                         timed=cells["wall_time_s"].notna())
    per = cells.groupby("model", sort=False).agg(
        cells=("id", "size"), cells_with_time=("timed", "sum"), wall_hours=("wall_hours", "sum"),
        gpu_hours=("gpu_hours", "sum"), cpu_hours=("cpu_hours", "sum")).reset_index()
    total = per.drop(columns="model").sum().to_dict()
    return pd.concat([per, pd.DataFrame([{"model": "all", **total}])], ignore_index=True)


def cells_table(agg: Aggregate) -> pd.DataFrame:
    cols = ["id", "name", "state", "reason", *agg.keys, "seed", *METRICS, "epoch_time_s",
            "wall_time_s", "gpus", "nodes", "cpus", "gpu_hours", "cpu_hours"]
    table = agg.cells[cols].copy()
    table["reason"] = [None if not isinstance(r, str) else r.strip().splitlines()[-1][:160]
                       for r in table["reason"]]
    return table


def states_table(agg: Aggregate) -> pd.DataFrame:
    counts = agg.cells["state"].value_counts()
    order = ["COMPLETED", "FAILED", "TIMEOUT", "PREEMPTED", "CANCELLED", "RUNNING", "PENDING",
             "NOT_STARTED", "MISSING"]
    states = [s for s in order if s in counts] + [s for s in counts.index if s not in order]
    return pd.DataFrame({"state": states + ["all"],
                         "cells": [int(counts[s]) for s in states] + [int(counts.sum())]})


# --- formats ----------------------------------------------------------------------------------

def _num(v) -> str:
    """A number for people: integers with thousands separators, else 4 significant digits."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if float(v).is_integer() or abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:.4g}"
    return f"{v:.4f}" if v == 0 or abs(v) >= 1e-4 else f"{v:.2e}"


def display_main(main: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    out = main[keys].astype(object).where(main[keys].notna(), "n/a")
    out["params"] = [_num(v) if pd.notna(v) else "n/a" for v in main["params_total"]]
    for m, label in METRICS.items():
        cell = []
        for mean, std, best in zip(main[f"{m}_mean"], main[f"{m}_std"], main[f"{m}_best"]):
            text = "n/a" if pd.isna(mean) else \
                f"{mean:.4f}" + ("" if pd.isna(std) else f" ± {std:.4f}")
            cell.append(f"**{text}**" if best else text)
        out[label] = cell
    out["n_seeds"] = main["n_seeds"]
    out["epoch time (s)"] = [_num(v) for v in main["epoch_time_s"]]
    out["incomplete"] = main["incomplete"]
    return out


def display_paired(paired: pd.DataFrame) -> pd.DataFrame:
    out = paired.drop(columns=["mean_diff", "ci_low", "ci_high", "t", "p_value"]).astype(object)
    out["mean diff (best − model)"] = ["n/a" if pd.isna(d) else f"{d:+.4f}"
                                       for d in paired["mean_diff"]]
    out["95% CI"] = ["n/a" if pd.isna(lo) else f"[{lo:+.4f}, {hi:+.4f}]"
                     for lo, hi in zip(paired["ci_low"], paired["ci_high"])]
    out["p"] = ["n/a" if pd.isna(p) else f"{p:.3g}" for p in paired["p_value"]]
    return out


def _display_numbers(df: pd.DataFrame) -> pd.DataFrame:
    out = df.astype(object)
    for c in df.columns:
        if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]):
            out[c] = [_num(v) for v in df[c].tolist()]
    return out.where(out.notna(), "")


def write_table(out: Path, name: str, data: pd.DataFrame, shown: pd.DataFrame, n_left: int) -> str:
    """name.csv (data, numbers as they are), name.md and name.tex (shown). Returns the md."""
    data.to_csv(out / f"{name}.csv", index=False)
    md = markdown_table(shown)
    (out / f"{name}.md").write_text(md)
    (out / f"{name}.tex").write_text(latex_table(shown, n_left))
    return md


def write(agg: Aggregate, out: Path, plots: bool = True) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    main = main_table(agg)
    paired = paired_tests(agg, main)
    compute, cells, states = compute_table(agg), cells_table(agg), states_table(agg)
    md = {
        "main": write_table(out, "main", main, display_main(main, agg.keys), len(agg.keys)),
        "paired": write_table(out, "paired", paired, display_paired(paired), len(agg.keys) + 2),
        "compute": write_table(out, "compute", compute, _display_numbers(compute), 1),
        "states": write_table(out, "states", states, states, 1),
        "cells": write_table(out, "cells", cells, _display_numbers(cells), 4),
    }
    figures = []
    if plots:
        from launcher import plots as plotting
        figures = plotting.write_all(agg, main, out)
    lines = [f"# Sweep {agg.name}", "",
             f"{len(agg.cells)} cells; states: {agg.state_source}. Metrics are test-split means "
             "± sample std over seeds; bold = best per dataset.", ""]
    if agg.problems:
        lines += [f"**{len(agg.problems)} result file(s) could not be read and were skipped:**", ""]
        lines += [f"- `{p}`: {e}" for p, e in agg.problems.items()] + [""]
    titles = {"main": "Results", "paired": "Paired t-tests: best model vs others",
              "compute": "Compute (GPU-hours = wall time × gpus × nodes; CPU-hours: cpus × "
                         "nodes, 1 core where unset)", "states": "Cell states", "cells": "Cells"}
    for key in ("main", "paired", "compute", "states"):
        lines += [f"## {titles[key]}", "", md[key], ""]
    lines += [f"![{f.stem}]({f.name})" for f in figures]
    lines += ["", "Every cell: [cells.md](cells.md), [cells.csv](cells.csv).", ""]
    (out / "summary.md").write_text("\n".join(lines))
    return md


def run_cli(args) -> int:
    try:
        agg = load(args.sweep)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(args.sweep) / "aggregate"
    write(agg, out, plots=not args.no_plots)
    for path, problem in agg.problems.items():
        print(f"warning: skipped {path}: {problem}", file=sys.stderr)
    counts = states_table(agg)
    print(f"{len(agg.cells)} cells (" + ", ".join(
        f"{s} {n}" for s, n in zip(counts["state"][:-1], counts["cells"][:-1])) + f") → {out}")
    return 0
