"""The sweep's figures, PNG beside the tables (matplotlib, Agg), from the `Aggregate` frame
(launcher/collect.py) and the main table alone:

    curves.png             validation Recall@10 per epoch (each result's
                           `val_recall@10_by_epoch`), one panel per dataset, a line per
                           configuration (mean over its seeds), coloured by model
    recall_vs_max_len.png  test Recall@10 (mean ± std over seeds) against max_len (RQ2), a line
                           per configuration of the other parameters
    accuracy_vs_time.png   test Recall@10 against mean epoch time, log x (RQ3)

A sweep of thousands of configurations draws one artist per model and panel (lines joined
with NaN breaks), not one per configuration: matplotlib's cost is per artist.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

CURVE = "val_recall@10_by_epoch"    # a result's validation Recall@10 per epoch


def _figure(datasets: list, models: list, title: str):
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets) + 1.6, 3.4),
                             squeeze=False)
    cmap = plt.get_cmap("tab10")
    colours = {m: cmap(i % 10) for i, m in enumerate(models)}
    fig.legend(handles=[plt.Line2D([], [], color=c, marker="o", label=m)
                        for m, c in colours.items()], loc="center right", frameon=False)
    fig.suptitle(title)
    right = 1 - 1.5 / fig.get_figwidth()
    fig.subplots_adjust(left=0.9 / fig.get_figwidth(), right=right, bottom=0.16, top=0.82,
                        wspace=0.3)
    return fig, dict(zip(datasets, axes[0])), colours


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _joined(frame: pd.DataFrame, by: list[str], cols: list[str]) -> list[np.ndarray]:
    """cols of every group of `frame`, one group after another with a NaN row between them."""
    codes = frame.groupby(by, sort=False, dropna=False).ngroup().to_numpy()
    order = np.argsort(codes, kind="stable")
    values, codes = frame[cols].to_numpy(dtype=float)[order], codes[order]
    breaks = np.flatnonzero(np.diff(codes)) + 1
    return list(np.insert(values, breaks, np.nan, axis=0).T)


def curves(agg, out: Path) -> Path:
    cells = agg.cells[agg.cells["state"] == "COMPLETED"]
    history = cells[[*agg.keys, CURVE]].explode(CURVE)   # a row per cell and epoch
    history["epoch"] = history.groupby(level=0).cumcount() + 1
    history = history.dropna(subset=[CURVE]).astype({CURVE: float})
    mean = history.groupby(agg.keys + ["epoch"], sort=False)[CURVE].mean().reset_index()
    mean = mean.sort_values(agg.keys + ["epoch"], kind="stable")
    fig, axes, colours = _figure(list(pd.unique(agg.cells["dataset"])),
                                 list(pd.unique(agg.cells["model"])),
                                 "Validation Recall@10 per epoch (mean over seeds)")
    for (dataset, model), lines in mean.groupby(["dataset", "model"], sort=False):
        x, y = _joined(lines, agg.keys, ["epoch", CURVE])
        axes[dataset].plot(x, y, lw=1.2, alpha=0.8, color=colours[model])
    for d, ax in axes.items():
        ax.set(title=d, xlabel="epoch", ylabel="validation Recall@10")
        ax.grid(alpha=0.3)
    return _save(fig, out / "curves.png")


def recall_vs_max_len(agg, main: pd.DataFrame, out: Path) -> Path:
    fig, axes, colours = _figure(list(pd.unique(main["dataset"])), list(pd.unique(main["model"])),
                                 "Test Recall@10 against sequence length (mean ± std over seeds)")
    others = [k for k in agg.keys if k not in ("dataset", "max_len", "model")]
    shown = main[main["test_recall@10_mean"].notna()].sort_values("max_len", kind="stable")
    for (dataset, model), lines in shown.groupby(["dataset", "model"], sort=False):
        x, y, err = _joined(lines.assign(std=lines["test_recall@10_std"].fillna(0)), others or
                            ["model"], ["max_len", "test_recall@10_mean", "std"])
        axes[dataset].errorbar(x, y, yerr=err, marker="o", ms=4, capsize=3, lw=1.2,
                               color=colours[model], alpha=0.85)
    for d, ax in axes.items():
        ax.set(title=d, xlabel="max_len", ylabel="test Recall@10")
        ax.grid(alpha=0.3)
    return _save(fig, out / "recall_vs_max_len.png")


def accuracy_vs_time(agg, main: pd.DataFrame, out: Path) -> Path:
    fig, axes, colours = _figure(list(pd.unique(main["dataset"])), list(pd.unique(main["model"])),
                                 "Accuracy against compute: one point per configuration")
    shown = main[main["test_recall@10_mean"].notna() & main["epoch_time_s"].notna()]
    for (dataset, model), pts in shown.groupby(["dataset", "model"], sort=False):
        axes[dataset].scatter(pts["epoch_time_s"], pts["test_recall@10_mean"], s=24,
                              color=colours[model], alpha=0.8)
    for d, ax in axes.items():
        times = shown.loc[shown["dataset"] == d, "epoch_time_s"]
        if len(times) and (times > 0).all():
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set(title=d, xlabel="mean epoch time (s)", ylabel="test Recall@10")
        ax.grid(alpha=0.3, which="both")
    return _save(fig, out / "accuracy_vs_time.png")


def write_all(agg, main: pd.DataFrame, out: Path) -> list[Path]:
    return [curves(agg, out), recall_vs_max_len(agg, main, out), accuracy_vs_time(agg, main, out)]
