"""RQ3's cost table from the cells' own epoch records (history.parquet), for results written
before the trainer recorded `epoch_time_median_s` and `time_to_best_s` (the aggregate's cost
table falls back to best epoch × mean epoch for those, and the mean carries the first epoch's
one-off kernel compiles: xLSTM's 19.6 s on an empty cache against 0.25 s an epoch after it).
Per COMPLETED trained cell: the steady (median) epoch, the first epoch, the best epoch, the
seconds of the epochs up to it (as run, and at the steady epoch), the cell's wall, test
metrics; each against a reference model.

    python -m benchmarks.cost_from_history results/study/cost-ml-1m-bert4rec/sweep \
        --out results/study/cost-ml-1m-bert4rec/cost_from_history
-> NAME.md, NAME.csv (NAME: the --out folder's last part)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from benchmarks.report import write
from recsys_core.train.results import read_result


def cells(sweep: Path) -> pd.DataFrame:
    rows = []
    for cell in sorted(Path(sweep, "cells").glob("*/")):
        result = read_result(cell) or {}
        history = cell / "history.parquet"
        if result.get("status") != "COMPLETED" or not result.get("best_epoch") or not history.exists():
            continue
        seconds = pd.read_parquet(history, columns=["epoch", "epoch_time_s"])
        best = result["best_epoch"]
        config = json.loads((cell / "cell.json").read_text())["config"]
        rows.append(dict(
            model=config["model"], dataset=config["dataset"], seed=config["seed"],
            epoch_s=seconds["epoch_time_s"].median(), first_epoch_s=seconds["epoch_time_s"].iloc[0],
            best_epoch=best, epochs_run=len(seconds),
            to_best_s=seconds.loc[seconds["epoch"] <= best, "epoch_time_s"].sum(),
            steady_to_best_s=best * seconds["epoch_time_s"].median(),
            wall_s=result.get("wall_time_s"), recall10=result.get("test_recall@10"),
            ndcg10=result.get("test_ndcg@10"), train_step=result.get("train_step")))
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep", type=Path)
    p.add_argument("--reference", default="sasrec", help="the model the ratios divide by")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    table = cells(args.sweep).groupby(["dataset", "model"], sort=False).mean(numeric_only=True)
    table = table.drop(columns="seed").reset_index()
    for col in ("epoch_s", "steady_to_best_s", "to_best_s", "wall_s"):
        ref = table[table["model"] == args.reference].set_index("dataset")[col]
        table[f"{col}_vs_{args.reference}"] = table[col] / table["dataset"].map(ref)
    write(args.out, args.out.name,
          f"# Cost per model from the cells' epoch records ({args.sweep})\n\n"
          f"epoch_s: median epoch (training + validation); first_epoch_s: the first, with its "
          f"one-off compiles; to_best_s: the epochs up to the best one; steady_to_best_s: best "
          f"epoch × median epoch (the compiles left out); means over the seeds "
          f"present; ratios against {args.reference}. `python -m benchmarks.cost_from_history`.",
          table, data=table)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
