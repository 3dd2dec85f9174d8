"""The aggregate's tables as people read them (the Markdown and LaTeX beside the CSVs):
thousands separators, 4 significant digits or decimals, "mean ± std", bold best values, "n/a"
for what could not be computed."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from launcher.collect import COLD_METRICS, METRICS, RECORDED


def number(v) -> str:
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


def mean_std(mean, std) -> str:
    """e.g. "0.3012 ± 0.0041"; the mean alone where there is no std (one seed)."""
    if pd.isna(mean):
        return "n/a"
    return f"{mean:.4f}" + ("" if pd.isna(std) else f" ± {std:.4f}")


def _keys(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    out = table[keys].astype(object).where(table[keys].notna(), "n/a")
    for k in keys:      # a searched learning rate has 17 digits: 4 significant ones are shown
        out[k] = [f"{v:.4g}" if isinstance(v, float) and not v.is_integer() else v
                  for v in out[k]]
    return out


def display_main(main: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    out = _keys(main, keys)
    out["params"] = [number(v) if pd.notna(v) else "n/a" for v in main["params_total"]]
    for m, label in METRICS.items():
        out[label] = [f"**{text}**" if best else text for text, best in zip(
            map(mean_std, main[f"{m}_mean"], main[f"{m}_std"]), main[f"{m}_best"])]
    if "cold_users" in main:    # the cold-start group: mean over seeds
        out["cold users"] = [number(v) for v in main["cold_users"]]
        for m, label in COLD_METRICS.items():
            out[label] = ["n/a" if pd.isna(v) else f"{v:.4f}" for v in main[f"{m}_mean"]]
    out["n_seeds"] = main["n_seeds"]
    out["best epoch / cap"] = [_budget(*row) for row in zip(
        main["best_epoch_min"], main["best_epoch_max"], main["epochs_cap"], main["near_cap"])]
    out["epoch time (s)"] = [number(v) for v in main["epoch_time_s"]]
    out["incomplete"] = main["incomplete"]
    return out


def _budget(low, high, cap, near: int) -> str:
    """e.g. "66-89 / 400", "98 / 100 (1 near cap)"; n/a for a model that trains nothing."""
    if pd.isna(low):
        return "n/a"
    best = f"{low:.0f}" if low == high else f"{low:.0f}-{high:.0f}"
    return f"{best} / {cap:.0f}" + (f" ({near} near cap)" if near else "")


def display_overview(table: pd.DataFrame, rows: list[str]) -> pd.DataFrame:
    """"mean ± std" per dataset, the best mean of each dataset in bold."""
    out = table[rows].astype(object)
    for col in table.columns:
        if not col.endswith("_mean"):
            continue
        mean, std = table[col], table[col[:-len("_mean")] + "_std"]
        best = mean.max()
        out[col[:-len("_mean")]] = [f"**{mean_std(m, s)}**" if m == best else mean_std(m, s)
                                    for m, s in zip(mean, std)]
    return out


def display_recorded(table: pd.DataFrame, keys: list[str], group: str) -> pd.DataFrame:
    out = _keys(table, keys)
    for m, label in RECORDED[group].items():
        short = m.removeprefix(f"{group}_")
        out[label] = list(map(mean_std, table[f"{short}_mean"], table[f"{short}_std"]))
    out["n_seeds"] = table["n_seeds"]
    return out


def display_paired(paired: pd.DataFrame, first: str = "best") -> pd.DataFrame:
    """`first`: what the `best` column holds (the best model, or `--versus`'s model)."""
    out = paired.drop(columns=["mean_diff", "ci_low", "ci_high", "t", "p_value"]).astype(object)
    out = out.rename(columns={"best": first})
    out[f"mean diff ({first} − model)"] = ["n/a" if pd.isna(d) else f"{d:+.4f}"
                                          for d in paired["mean_diff"]]
    out["95% CI"] = ["n/a" if pd.isna(lo) else f"[{lo:+.4f}, {hi:+.4f}]"
                     for lo, hi in zip(paired["ci_low"], paired["ci_high"])]
    out["p"] = ["n/a" if pd.isna(p) else f"{p:.3g}" for p in paired["p_value"]]
    return out


def display_numbers(df: pd.DataFrame) -> pd.DataFrame:
    out = df.astype(object)
    for c in df.columns:
        if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]):
            out[c] = [number(v) for v in df[c].tolist()]
    return out.where(out.notna(), "")
