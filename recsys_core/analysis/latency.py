"""Inference latency against sequence length (the study's scaling figure).

For each model and length L: an untrained model (weights do not change the work done) of the
given size with max_len = L scores a batch of full-length histories with `score_next` (encode
+ logits over the whole catalogue); warm-up calls first, then the median of timed repeats, each
bracketed by device synchronisation (torch.cuda.synchronize on CUDA). bf16 autocast on CUDA
and fp32 on CPU by default, as the trainer evaluates. Throughput = sequences per second. Per
model a least-squares fit of log latency on log length gives the scaling exponent alpha, with
its r2; at a small batch the short lengths are launch-bound (flat), so a second fit over the
lengths whose latency is at least twice the lowest gives alpha_tail, and `verdict` says
which of the two, if either, means something (latency_fit.csv).
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

from recsys_core.render import write_table
from recsys_core.train.results import read_result
from recsys_core.models import build_model

DEFAULT_LENGTHS = list(range(64, 1537, 64))


def parse_lengths(tokens: list[str]) -> list[int]:
    """`64 128` or a range `64:1536:64` (inclusive), or both."""
    out = []
    for tok in tokens:
        if ":" in tok:
            start, stop, step = (int(x) for x in tok.split(":"))
            out.extend(range(start, stop + 1, step))
        else:
            out.append(int(tok))
    return sorted(set(out))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def time_model(model, batch: int, length: int, n_items: int, device: torch.device,
               warmup: int, repeats: int, bf16: bool, seed: int = 0) -> list[float]:
    gen = torch.Generator().manual_seed(seed)
    history = torch.randint(1, n_items + 1, (batch, length), generator=gen).to(device)
    times = []
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for i in range(warmup + repeats):
            _sync(device)
            start = time.perf_counter()
            model.score_next(history)
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return times


def measure(models: list[str], lengths: list[int], *, batch: int = 32, dim: int = 256,
            blocks: int = 4, heads: int = 4, n_items: int = 10_678, device: str = "auto",
            warmup: int = 3, repeats: int = 10, precision: str = "auto",
            threads: int | None = None) -> pd.DataFrame:
    if threads:
        # On a busy CPU, intra-op threads wait for each other: 1 thread can be 100x faster.
        torch.set_num_threads(threads)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       "cpu" if device == "auto" else device)
    bf16 = precision == "bf16" or (precision == "auto" and dev.type == "cuda")
    rows = []
    for name in models:
        for length in lengths:
            # Built for each length, as a model trained at max_len = L would be (xLSTM's CPU
            # kernel picks its chunk size from max_len).
            torch.manual_seed(0)
            cfg = SimpleNamespace(embedding_dim=dim, num_heads=heads, num_blocks=blocks,
                                  dropout=0.0, max_len=length, mask_prob=0.2)
            model = build_model(name, n_items, cfg, dev.type).to(dev).eval()
            row = {"model": name, "max_len": length, "batch": batch, "dim": dim, "blocks": blocks,
                   "heads": heads, "n_items": n_items, "device": str(dev),
                   "threads": torch.get_num_threads() if dev.type == "cpu" else None,
                   "precision": "bf16" if bf16 else "fp32",
                   "params": sum(p.numel() for p in model.parameters())}
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            try:
                times = time_model(model, batch, length, n_items, dev, warmup, repeats, bf16)
            except torch.OutOfMemoryError:
                del model
                torch.cuda.empty_cache()
                rows.append({**row, "status": "OOM"})
                break            # longer sequences need more memory still
            median = statistics.median(times)
            rows.append({**row, "status": "ok", "latency_ms": median * 1e3,
                         "latency_ms_min": min(times) * 1e3, "latency_ms_max": max(times) * 1e3,
                         "throughput_seq_s": batch / median,
                         "throughput_tokens_s": batch * length / median,
                         "peak_mem_mb": torch.cuda.max_memory_allocated(dev) / 2**20
                         if dev.type == "cuda" else None})
            del model
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return pd.DataFrame(rows)


def _power_fit(lengths: np.ndarray, latency_ms: np.ndarray) -> tuple[float, float, float]:
    """(alpha, c_ms, r2) of latency ≈ c · L^alpha: least squares of log latency on log L."""
    x, y = np.log(lengths.astype(float)), np.log(latency_ms.astype(float))
    alpha, intercept = np.polyfit(x, y, 1)
    resid = y - (alpha * x + intercept)
    r2 = 1 - (resid ** 2).sum() / max(((y - y.mean()) ** 2).sum(), 1e-300)
    return float(alpha), float(np.exp(intercept)), float(r2)


# A latency under this multiple of the lowest one is taken as launch-bound (the GPU
# waits for kernel launches, so the time does not grow with L): the tail fit starts above it.
LAUNCH_BOUND = 2.0
GOOD_R2 = 0.95


def fit_alpha(table: pd.DataFrame) -> pd.DataFrame:
    """latency ≈ c · L^alpha per model, over every length (alpha, c_ms, r2) and over the tail
    where latency has left the launch-bound floor (alpha_tail, r2_tail from tail_from_len,
    >= 3 lengths), with a verdict on which fit, if any, says something."""
    rows = []
    for name, t in table[table["status"] == "ok"].groupby("model", sort=False):
        t = t.sort_values("max_len")
        row = {"model": name, "alpha": np.nan, "c_ms": np.nan, "r2": np.nan, "points": len(t),
               "min_len": int(t["max_len"].min()), "max_len": int(t["max_len"].max()),
               "alpha_tail": np.nan, "r2_tail": np.nan, "tail_from_len": np.nan}
        if len(t) < 2:
            rows.append({**row, "verdict": "too few lengths"})
            continue
        lengths, ms = t["max_len"].to_numpy(), t["latency_ms"].to_numpy()
        row["alpha"], row["c_ms"], row["r2"] = _power_fit(lengths, ms)
        tail = ms >= LAUNCH_BOUND * ms.min()
        if tail.sum() >= 3:
            row["alpha_tail"], _, row["r2_tail"] = _power_fit(lengths[tail], ms[tail])
            row["tail_from_len"] = int(lengths[tail][0])
        rows.append({**row, "verdict": verdict(row)})
    return pd.DataFrame(rows)


def verdict(row: dict) -> str:
    if row["r2"] >= GOOD_R2:
        return "power law over every length"
    if row["r2_tail"] >= GOOD_R2:
        return (f"launch-bound below L={row['tail_from_len']}: alpha of every length "
                f"meaningless, alpha_tail holds")
    tail = "fewer than 3 lengths above twice the lowest latency" \
        if np.isnan(row["r2_tail"]) else f"tail r2 {row['r2_tail']:.2f}"
    return f"no power law (r2 {row['r2']:.2f}; {tail}): alpha meaningless"


def read_tables(paths: list[Path]) -> pd.DataFrame:
    """latency.csv tables measured apart (e.g. one model per device call), as one table; a
    model measured in two of them is an error, not silently averaged."""
    tables, measured_in = [], {}       # model → the table that has it
    for path in paths:
        path = Path(path)
        path = path / "latency.csv" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no latency table there")
        t = pd.read_csv(path)
        missing = {"model", "max_len", "status", "latency_ms"} - set(t.columns)
        if missing:
            raise ValueError(f"{path}: not a latency table (no {', '.join(sorted(missing))} column)")
        for name in t["model"].unique():
            if name in measured_in:
                raise ValueError(f"{path}: {name} already measured in {measured_in[name]}")
            measured_in[name] = path
        tables.append(t)
    return pd.concat(tables, ignore_index=True)


def analyse(out: Path, models: list[str], lengths: list[int], runs: list[Path] | None = None,
            measured: pd.DataFrame | None = None, **kw) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Runs, when given, set the sizes (model, embedding, blocks, heads, catalogue) per run;
    `measured` (read_tables'), when given, is fitted as it is (nothing is measured)."""
    if measured is not None:
        table = measured
    elif runs:
        tables = []
        for path in runs:
            r = read_result(path)
            sizes = dict(dim=r["embedding_dim"], blocks=r["num_blocks"], heads=r["num_heads"],
                         n_items=r["dataset_items"])
            tables.append(measure([r["model"]], lengths, **{**kw, **sizes}))
        table = pd.concat(tables, ignore_index=True)
    else:
        table = measure(models, lengths, **kw)
    fit = fit_alpha(table)
    write_table(out, "latency", table)
    write_table(out, "latency_fit", fit)
    figure(table, fit, out / "latency.png")
    return table, fit


def figure(table: pd.DataFrame, fit: pd.DataFrame, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401  (matplotlib.ticker below)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    ok = table[table["status"] == "ok"]
    alphas = dict(zip(fit["model"], fit["alpha"]))
    for i, (name, t) in enumerate(ok.groupby("model", sort=False)):
        colour = plt.get_cmap("tab10")(i)
        left.loglog(t["max_len"], t["latency_ms"], "o", ms=4, color=colour,
                    label=f"{name} (alpha = {alphas.get(name, float('nan')):.2f})")
        row = fit[fit["model"] == name]
        if len(row) and np.isfinite(row["alpha"].iloc[0]):
            xs = np.array([t["max_len"].min(), t["max_len"].max()], dtype=float)
            left.loglog(xs, row["c_ms"].iloc[0] * xs ** row["alpha"].iloc[0], "--", color=colour)
        right.plot(t["max_len"], t["throughput_seq_s"], "o-", ms=3, color=colour, label=name)
    first = table.iloc[0] if len(table) else {}
    left.set(xlabel="sequence length L", ylabel="latency per batch (ms, median)",
             title=f"batch {first.get('batch')}, D={first.get('dim')}, "
                   f"{first.get('blocks')} blocks, {first.get('device')}")
    right.set(xlabel="sequence length L", ylabel="sequences / s", title="throughput")
    right.set_yscale("log")
    left.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    left.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    left.set_xticks(sorted(set(ok["max_len"]))[:: max(1, len(set(ok["max_len"])) // 6)])
    for ax in (left, right):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
