"""Did tuning change the ranking? The final seeds of a `launcher tune` search (the sweep of its
--emit-grid file) beside the same models, datasets and seeds at the untuned settings of
another sweep (the study's), read through the aggregate's own loader (launcher/collect.py):

    python -m benchmarks.tuning_compare --tuned results/study/tuning/final/sweep \
        --untuned results/study/sweep --search results/study/tuning/search \
        --out results/study/tuning
-> OUT/compare.md, OUT/compare.csv: per setting (tuned, untuned) and model, the searched
   parameters, test Recall/NDCG@10 mean ± std over the seeds both settings have, best epochs
   against the cap (no times: both sweeps' cells shared the GPU with others); per setting,
   each pair of models' per-seed differences with a paired t-test; and whether the order of
   the models changed.

Only the untuned cells at the tuned cells' values of the parameters the search did not set
(MATCHED: dataset, max_len, embedding size, batch, epoch cap, patience, ...) are compared, as
a comparison at other settings would say nothing about tuning; none left is an error.
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import report
from launcher.collect import load
from launcher.tables import paired_t

METRICS = {"test_recall@10": "Recall@10", "test_ndcg@10": "NDCG@10"}
MATCHED = ("dataset", "max_len", "embedding_dim", "batch_size", "optimizer", "scheduler",
           "epochs", "patience", "monitor", "loss", "eval_batch_size")


def searched(search_dir: Path) -> list[str]:
    """The parameters the search varied: its space, as `tune status --json` recorded it."""
    status = json.loads((search_dir / "status.json").read_text())
    return sorted({k for space in status["budget"]["space"].values() for k in space})


def completed(sweep: Path, models: list[str] | None = None) -> pd.DataFrame:
    cells = load(sweep).cells
    cells = cells[cells["state"] == "COMPLETED"]
    return cells[cells["model"].isin(models)] if models else cells


def paired(frame: pd.DataFrame, a: str, b: str, metric: str) -> dict:
    """a − b over the seeds both have: mean, per-seed values, the aggregate's paired t-test."""
    x = frame[frame["model"] == a].set_index("seed")[metric]
    y = frame[frame["model"] == b].set_index("seed")[metric]
    d = (x - y).dropna().sort_index()
    _, p, _ = paired_t(d.mean(), d.std(ddof=1), len(d))
    return {"n_seeds": len(d), "mean_diff": d.mean(),
            "per_seed": " ".join(f"{v:+.4f}" for v in d), "p_value": float(p)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tuned", required=True, help="the sweep of the tuned grid's final seeds")
    p.add_argument("--untuned", required=True, help="a sweep with the same cells untuned")
    p.add_argument("--search", required=True,
                   help="the search's directory (its status.json, from `tune status --json`)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    tuned = completed(Path(args.tuned))
    models = sorted(tuned["model"].unique())
    keys = searched(Path(args.search))
    untuned = completed(Path(args.untuned), models)
    for k in MATCHED:
        want = set(tuned[k].dropna().unique())
        untuned = untuned[untuned[k].isin(want)] if want else untuned
    if untuned.empty:
        raise SystemExit(f"{args.untuned}: no completed cell of {models} at the tuned sweep's "
                         f"{', '.join(MATCHED)}")
    seeds = sorted(set(tuned["seed"]) & set(untuned["seed"]))
    both = pd.concat([tuned.assign(setting="tuned"), untuned.assign(setting="untuned")])
    both = both[both["seed"].isin(seeds)]
    rows = []
    for (setting, model), g in both.groupby(["setting", "model"], sort=True):
        row = {"setting": setting, "model": model, "n_seeds": len(g)}
        row.update({k: g[k].iloc[0] for k in keys})
        for m, label in METRICS.items():
            row[label] = f"{g[m].mean():.4f} ± {g[m].std(ddof=1):.4f}"
            row[f"{m}_mean"] = g[m].mean()
        row["best epoch / cap"] = f"{int(g['best_epoch'].min())}-{int(g['best_epoch'].max())} " \
                                  f"/ {int(g['epochs'].max())}"
        rows.append(row)
    table = pd.DataFrame(rows)
    tests, order = [], []
    for setting, g in both.groupby("setting", sort=True):
        for a, b in itertools.combinations(models, 2):
            for m, label in METRICS.items():
                tests.append({"setting": setting, "pair": f"{a} − {b}", "metric": label,
                              **paired(g, a, b, m)})
        for m, label in METRICS.items():
            means = table[table["setting"] == setting].set_index("model")[f"{m}_mean"]
            order.append({"metric": label, "setting": setting,
                          "order": " > ".join(means.sort_values(ascending=False).index)})
    order = pd.DataFrame(order).pivot(index="metric", columns="setting", values="order")
    order["ranking changed"] = np.where(order["tuned"] != order["untuned"], "yes", "no")
    shown = table.drop(columns=[f"{m}_mean" for m in METRICS])
    report.write(Path(args.out), "compare",
                 f"# Tuned against untuned: {', '.join(models)} on "
                 f"{', '.join(map(str, sorted(tuned['dataset'].unique())))}, seeds "
                 f"{', '.join(map(str, seeds))}\n\n(`python -m benchmarks.tuning_compare`; "
                 f"tuned: {args.tuned}, untuned: {args.untuned})",
                 shown, "Paired differences across seeds:", pd.DataFrame(tests),
                 "The order of the models by mean:", order.reset_index(),
                 data=table)


if __name__ == "__main__":
    main()
