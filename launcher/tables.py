"""The aggregate's tables, from the `Aggregate` frame (collect.py), numbers as they are:

    main     model × dataset × max_len (× every other key): test metrics mean and std over
             seeds, n_seeds, parameters, epoch time, best epochs against the epoch cap
             (`near_cap`: cells whose best epoch is within 10% of it), the cells that did not
             complete, and the best mean per dataset flagged in `<metric>_best`
    overview one row per model, one column per dataset: test Recall@10 mean ± std
    paired   per comparison group, the best model against every other: paired t-test, 95% CI
    cost     per configuration, accuracy against epoch time, time to the best epoch, wall and
             GPU-seconds per cell (RQ3)
    compute  wall, GPU- and CPU-hours per model and in all, and where the cells' time went
             (queue wait, process start, setup, epochs, saving, final test: seconds summed)
             with the share of it that was not training (`overhead_share`)
    cells    every cell: state, reason, metrics, times, resources
    states   cells per state
    longtail per configuration with long-tail figures (cells trained since results record
             them): Recall@10 of users whose test target is a head, mid or tail item, the
             tail's share of the top-10 lists, catalogue coverage and the Gini of the items'
             recommendation counts, mean and std over seeds; n_seeds
    geometry likewise for the item embeddings' geometry (RQ4): dimensions for 90% of the
             variance, participation ratio, anisotropy, hubness Gini and skewness
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from launcher.collect import (COLD_METRICS, METRICS, RECORDED, Aggregate,
                              varying_within_model_and_dataset)


def _order(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """Rows sorted by cols: numbers by value, anything else by first appearance."""
    sort = pd.DataFrame(index=df.index)
    for c in cols:
        numeric = pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
        sort[c] = df[c] if numeric else pd.factorize(df[c])[0]
    return df.loc[sort.sort_values(cols, kind="stable").index].reset_index(drop=True)


def has_cold_users(agg: Aggregate) -> bool:
    return bool((agg.cells["cold_users"].fillna(0) > 0).any()) if "cold_users" in agg.cells \
        else False


def main_table(agg: Aggregate) -> pd.DataFrame:
    cells, keys = agg.cells, agg.keys
    done = cells[cells["state"] == "COMPLETED"]
    # a best epoch within 10% of the cap: the cell may not have plateaued (rerun it higher)
    done = done.assign(near_cap=done["best_epoch"] >= 0.9 * done["epochs"])
    groups = cells.groupby(keys, sort=False, dropna=False)
    table = groups.size().rename("n_cells").to_frame()
    g = done.groupby(keys, sort=False, dropna=False)
    table["n_seeds"] = g.size()
    for m in METRICS:
        table[f"{m}_mean"] = g[m].mean()
        table[f"{m}_std"] = g[m].std(ddof=1)
    if has_cold_users(agg):
        table["cold_users"] = g["cold_users"].median()
        for m in COLD_METRICS:
            table[f"{m}_mean"] = g[m].mean()
    table["best_epoch_min"] = g["best_epoch"].min()      # the training budget used
    table["best_epoch_max"] = g["best_epoch"].max()
    table["epochs_cap"] = g["epochs"].max()
    table["near_cap"] = g["near_cap"].sum()
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
    table["near_cap"] = table["near_cap"].fillna(0).astype(int)
    table = _order(table, ["dataset", "max_len", *keys[3:], "model"])
    for m in METRICS:   # the best mean per dataset, ties all marked
        best = table.groupby("dataset", sort=False)[f"{m}_mean"].transform("max")
        table[f"{m}_best"] = table[f"{m}_mean"].notna() & (table[f"{m}_mean"] == best)
    return table


def overview_table(main: pd.DataFrame, keys: list[str], metric: str = "test_recall@10"):
    """The main table folded to one row per model (and per value of any key that varies inside
    a dataset for that model, e.g. max_len in a sweep of lengths, or the epoch cap raised for
    one model on one dataset; "–" for the models where it does not) and one pair of columns per
    dataset: the metric's mean and std over seeds. Keys that only follow the dataset or the
    model (each dataset's max_len, SASRec's own head count) are left out: they are in the main
    table.
    Returns (table, the row keys)."""
    varying = varying_within_model_and_dataset(
        main, [k for k in keys if k not in ("model", "dataset")])
    within = [k for k in keys if any(k in v for v in varying.values())]
    rows = ["model", *within]
    main = main.copy()
    for k in within:    # a model whose value never varies inside a dataset: one row for it
        splits = main["model"].map(lambda m: k in varying.get(m, ()))
        main[k] = main[k].astype(object).where(splits, "–")
    wide = main.pivot_table(index=rows, columns="dataset", sort=False, dropna=False,
                            values=[f"{metric}_mean", f"{metric}_std"], aggfunc="first")
    table = pd.DataFrame(index=wide.index)
    for d in pd.unique(main["dataset"]):
        table[f"{d}_mean"] = wide.get((f"{metric}_mean", d))
        table[f"{d}_std"] = wide.get((f"{metric}_std", d))
    order = main[rows].drop_duplicates().set_index(rows).index
    return table.reindex(order).reset_index(), rows


def paired_t(mean_diff, sd, n) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The paired t-test of differences with this mean, standard deviation and count (arrays
    or scalars): (t, two-sided p, half-width of the 95% CI); NaN where n < 2."""
    from scipy.special import stdtr, stdtrit   # the t distribution (scipy.stats: 2 s to import)
    n = np.asarray(n, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.asarray(sd, dtype=float) / np.sqrt(n)
        t = np.where(n >= 2, np.asarray(mean_diff, dtype=float) / se, np.nan)
        p = np.where(n >= 2, 2 * stdtr(n - 1, -np.abs(t)), np.nan)
        half = np.where(n >= 2, stdtrit(n - 1, 0.975) * se, np.nan)
    return t, p, half


def paired_tests(agg: Aggregate, main: pd.DataFrame, reference: str | None = None
                 ) -> pd.DataFrame:
    """Per comparison group (`Aggregate.compare_keys`), the best model by mean test Recall@10
    (or the `reference` model, in the groups that have it) against each other model, over
    the seeds both completed: the paired t-test (the statistic of scipy.stats.ttest_rel, for
    all pairs at once) and the t-based 95% CI of the mean difference best − model. Under 2
    shared seeds: n/a."""
    cmp_keys, variant = agg.compare_keys, agg.variant_keys
    # a model's variant (its own settings that take several values, e.g. two epoch caps) is
    # a row of its own: "model" below is the model with its variant's values beside it
    mine = ["model", *variant]
    done = agg.cells[agg.cells["state"] == "COMPLETED"]
    per_seed = done.groupby(cmp_keys + mine + ["seed"], sort=False, dropna=False)[
        list(METRICS)].mean().reset_index()
    ranked = main[main["test_recall@10_mean"].notna()]
    if reference is None:
        best = ranked.loc[ranked.groupby(cmp_keys, sort=False)["test_recall@10_mean"].idxmax(),
                          cmp_keys + mine]
    else:   # the reference's best variant in each group that has it
        ranked = ranked.sort_values("test_recall@10_mean", ascending=False, kind="stable")
        best = ranked.loc[ranked["model"] == reference, cmp_keys + mine]
    best = best.drop_duplicates(cmp_keys).rename(
        columns={"model": "best", **{k: f"{k}_best" for k in variant}})
    best_mine = ["best", *(f"{k}_best" for k in variant)]
    best_values = per_seed.merge(best, left_on=cmp_keys + mine, right_on=cmp_keys + best_mine)
    best_values = best_values.drop(columns=mine + best_mine)
    pairs = per_seed.merge(best, on=cmp_keys)
    same = (pairs["model"] == pairs["best"])
    for k in variant:
        same &= (pairs[k] == pairs[f"{k}_best"]) | (pairs[k].isna() & pairs[f"{k}_best"].isna())
    pairs = pairs[~same].merge(best_values, on=cmp_keys + ["seed"], how="left",
                               suffixes=("", "_best"))
    rank = main.reset_index()[cmp_keys + mine + ["index"]]
    out = []
    for m, label in METRICS.items():
        diff = pairs.assign(d=pairs[f"{m}_best"] - pairs[m])
        g = diff.groupby(cmp_keys + best_mine + mine, sort=False, dropna=False)["d"]
        t = g.agg(n_shared_seeds="count", mean_diff="mean", sd="std").reset_index()
        t["t"], t["p_value"], half = paired_t(t["mean_diff"], t["sd"], t["n_shared_seeds"])
        t["ci_low"], t["ci_high"] = t["mean_diff"] - half, t["mean_diff"] + half
        out.append(t.assign(metric=label, metric_order=len(out)))
    cols = cmp_keys + best_mine + mine + ["metric", "n_shared_seeds", "mean_diff", "ci_low",
                       "ci_high", "t", "p_value"]
    if not out or not len(pairs):
        return pd.DataFrame(columns=cols)
    table = pd.concat(out).merge(rank, on=cmp_keys + mine)
    return table.sort_values(["index", "metric_order"], kind="stable")[cols].reset_index(drop=True)


# a cell's time, in the order it passes (recsys_core/train/results.py declares the fields)
TIME_PARTS = {"time_queue_s": "queue_s", "time_start_s": "start_s", "time_setup_s": "setup_s",
              "time_epochs_s": "epochs_s", "time_saving_s": "saving_s",
              "time_final_s": "final_s"}


def compute_table(agg: Aggregate) -> pd.DataFrame:
    """Per model and in all: hours, and the time split. `overhead_share`: of the cells' time
    from their process's start (or hand-off to a worker) to their result, the share spent
    outside training epochs (start-up, setup, saving, the final test); the queue not counted."""
    cells = agg.cells.copy()     # consolidated: a frame of many result columns warns on assign
    parts = {short: cells[long].fillna(0) if long in cells else 0.0
             for long, short in TIME_PARTS.items()}
    cells = cells.assign(wall_hours=cells["wall_time_s"].fillna(0) / 3600,
                         timed=cells["wall_time_s"].notna(),
                         cell_s=parts["start_s"] + cells["wall_time_s"].fillna(0), **parts)
    per = cells.groupby("model", sort=False).agg(
        cells=("id", "size"), cells_with_time=("timed", "sum"), wall_hours=("wall_hours", "sum"),
        gpu_hours=("gpu_hours", "sum"), cpu_hours=("cpu_hours", "sum"), cell_s=("cell_s", "sum"),
        **{short: (short, "sum") for short in TIME_PARTS.values()}).reset_index()
    total = per.drop(columns="model").sum().to_dict()
    table = pd.concat([per, pd.DataFrame([{"model": "all", **total}])], ignore_index=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = 1 - table["epochs_s"] / table["cell_s"]
    table["overhead_share"] = share.where(table["cell_s"] > 0)
    return table


def cost_table(agg: Aggregate, main: pd.DataFrame) -> pd.DataFrame:
    """Accuracy against what it cost, per configuration (the main table's rows; means over the
    completed seeds): epoch time (mean, and the steady median), the best epoch, time to it (the
    seconds of the epochs up to it: the training a run with perfect early stopping would have
    paid; best epoch × mean epoch for results older than that record), wall and GPU-seconds
    per cell. Times are as measured: cells that shared a GPU paid for each other."""
    keys = agg.keys
    done = agg.cells[agg.cells["state"] == "COMPLETED"]
    recorded = done["time_to_best_s"] if "time_to_best_s" in done else np.nan
    median = done["epoch_time_median_s"] if "epoch_time_median_s" in done else np.nan
    done = done.assign(time_to_best_s=pd.Series(recorded, index=done.index, dtype=float)
                       .fillna(done["best_epoch"] * done["epoch_time_s"]),
                       epoch_time_median_s=median, gpu_s=done["gpu_hours"] * 3600)
    g = done.groupby(keys, sort=False, dropna=False)
    cost = pd.DataFrame({"epoch_time_median_s": g["epoch_time_median_s"].mean(),
                         "best_epoch": g["best_epoch"].mean(),
                         "time_to_best_s": g["time_to_best_s"].mean(),
                         "wall_s": g["wall_time_s"].mean(), "gpu_s": g["gpu_s"].mean()})
    if "device" in done:     # seeds timed on different machines do not compare: say so
        cost["devices"] = g["device"].agg(_devices)
    cols = keys + ["n_seeds", "test_recall@10_mean", "test_ndcg@10_mean", "epoch_time_s"]
    return main[cols].merge(cost.reset_index(), on=keys, how="left")


def _devices(device: pd.Series) -> str:
    """The device a configuration's cells ran on, or each with its count when they differ."""
    counts = device.dropna().value_counts()
    if len(counts) <= 1:
        return counts.index[0] if len(counts) else ""
    return ", ".join(f"{name} ×{n}" for name, n in counts.items())


def has_recorded(agg: Aggregate, group: str) -> bool:
    """Whether a completed cell recorded that analysis (collect.RECORDED: `longtail`,
    `geometry`); cells trained before results held it have none."""
    probe = next(iter(RECORDED[group]))
    return probe in agg.cells and bool(agg.cells[probe].notna().any())


def recorded_table(agg: Aggregate, group: str) -> pd.DataFrame:
    """The main table's rows that have that analysis's figures: each figure's mean and std
    over the seeds that have them (columns without the `group_` prefix), n_seeds."""
    keys, metrics = agg.keys, list(RECORDED[group])
    cells = agg.cells.reindex(columns=[*keys, *metrics])    # a figure no cell has: NaN
    cells = cells[cells[metrics[0]].notna()]
    figures = cells[metrics].astype(float)          # a field null in every file: object
    g = figures.groupby([cells[k] for k in keys], sort=False, dropna=False)
    table = pd.DataFrame(index=g.size().index)
    for m in metrics:
        short = m.removeprefix(f"{group}_")
        table[f"{short}_mean"] = g[m].mean()
        table[f"{short}_std"] = g[m].std(ddof=1)
    table["n_seeds"] = g.size()
    return _order(table.reset_index(), ["dataset", "max_len", *keys[3:], "model"])


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
