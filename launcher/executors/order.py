"""Which queued cell a free slot of the local executor takes next: longest first, or as listed.

A grid's wall time is bounded by its longest cell, and by how late that cell starts: with the
cells in grid order, the slow xLSTM cells of a grid listed after the fast ones start last and
run alone at the end. Starting the expected-longest cells first (LPT, longest processing time
first) lets the short cells fill the slots around them. The order changes nothing but which
cell a free slot takes next; ties keep grid order (a stable sort), so a run is reproducible.

A cell's expected cost is a static prior per model (`PRIORS`, scaled by max_len and the
dataset's size) calibrated by what this sweep has measured: the mean wall time of the
COMPLETED cells of the same (model, dataset) in the sweep folder (result.json: time_start_s +
wall_time_s). For a (model, dataset) with such cells, cost = prior × (their mean wall / their
mean prior), which is their mean wall for a cell of the same max_len and data; for one without,
the prior times the median of that ratio over the measured pairs (the machine's speed against
the H200's), or the prior alone when nothing was measured.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass

from launcher.grid import Cell
from launcher.sweep import Sweep
from recsys_core.train.results import read_result

ORDERS = ("longest-first", "grid")


@dataclass(frozen=True)
class Prior:
    fixed_s: float              # paid whatever the data: the first epoch's capture and compile
    scaled_s: float             # the rest, at REF_LEN and REF_INTERACTIONS
    by_len: bool = True         # grows with max_len (pop's counting does not)


# Seconds per cell on one H200 with 18 cells sharing it (local executor, workers, --mps), ML-100K:
# `python -m benchmarks.grid_throughput --workloads ml100k-paper-54 --modes worker-mps
# --cells-per-gpu 18` (2026-12-03; results/benchmarks/grid_throughput_h200/
# ml100k_worker_mps_cells.csv, slots 18), the mean over max_len 32/64/128 and 3 seeds of setup +
# epochs + final (start-up left out: a worker pays it once, for whichever cell comes first);
# fixed_s = capture_s (xLSTM's: its cold Triton compile). mamba4rec and sasmamba are not in that
# grid: ~12 s is issue 17's figure for them.
PRIORS = {
    "xlstm": Prior(15.5, 17.4),
    "bert4rec": Prior(1.9, 6.9),
    "mamba4rec": Prior(4.0, 8.0),
    "sasmamba": Prior(4.0, 8.0),
    "pop": Prior(0.0, 5.0, by_len=False),   # no GPU: counting and the test on the CPU
    "sasrec": Prior(0.5, 1.0),
    "gru4rec": Prior(0.1, 0.9),
    "lstm": Prior(0.1, 0.8),
}
# A model not in PRIORS: the median cell of the table, neither first nor last.
MIDDLE = Prior(0.0, statistics.median(p.fixed_s + p.scaled_s for p in PRIORS.values()))
REF_LEN, REF_INTERACTIONS = 64, 100_000
# Interactions in each dataset's file (the mirror's files, GroupLens' READMEs; synthetic:
# recsys_core/data/dataset.py's SYNTHETIC_SHAPES, or the cell's `synthetic.n_interactions`).
# A dataset not here counts as ML-100K-sized.
INTERACTIONS = {
    "ml-100k": 100_000, "ml-1m": 1_000_209, "ml-10m": 10_000_054, "ml-20m": 20_000_263,
    "ml-1m-bert4rec": 999_611, "amazon-beauty": 353_962, "video-sasrec": 287_107,
    "beauty-s3rec": 198_502, "sports-s3rec": 296_337, "toys-s3rec": 167_597,
    "yelp-s3rec": 316_354,
    "synthetic": 15_000, "synthetic-ml-1m": 1_000_209, "synthetic-ml-20m": 20_000_263,
}


def check(order: str) -> None:
    if order not in ORDERS:
        raise ValueError(f"--order {order!r}: valid: {', '.join(ORDERS)}")


def prior_s(model: str, dataset: str, max_len: int, synthetic: dict | None) -> float:
    """A cell's expected seconds before anything of its sweep was measured."""
    prior = PRIORS.get(model, MIDDLE)
    size = (synthetic or {}).get("n_interactions") or INTERACTIONS.get(dataset, REF_INTERACTIONS)
    scale = size / REF_INTERACTIONS * (max_len / REF_LEN if prior.by_len else 1.0)
    return prior.fixed_s + prior.scaled_s * scale


def _cell_prior(cell: Cell) -> float:
    cfg = cell.config
    return prior_s(cfg.model, cfg.dataset, cfg.max_len, cfg.synthetic)


def _result_prior(result: dict) -> float:
    synthetic = result.get("synthetic")     # nested values are JSON text in a result record
    return prior_s(result["model"], result["dataset"], int(result["max_len"]),
                   json.loads(synthetic) if isinstance(synthetic, str) else synthetic)


def measured(sweep: Sweep) -> list[dict]:
    """The sweep's COMPLETED results that say how long their cell took (unreadable files are
    status's business, skipped here)."""
    out = []
    for cid in sweep.cell_ids():
        try:
            r = read_result(sweep.cell_dir(cid))
        except ValueError:
            continue
        if r and r["status"] == "COMPLETED" and r.get("wall_time_s") is not None and \
                r.get("model") and r.get("dataset") and r.get("max_len"):
            out.append(r)
    return out


def expected_costs(cells: list[Cell], results: list[dict]) -> tuple[dict[str, float], int]:
    """(cell id → expected seconds, how many of the cells' (model, dataset) pairs were
    measured): the prior, calibrated by `results` (module docstring)."""
    walls: dict[tuple[str, str], list[float]] = {}
    priors: dict[tuple[str, str], list[float]] = {}
    for r in results:
        key = (r["model"], r["dataset"])
        walls.setdefault(key, []).append(r["wall_time_s"] + (r.get("time_start_s") or 0.0))
        priors.setdefault(key, []).append(_result_prior(r))
    ratio = {k: sum(walls[k]) / sum(priors[k]) for k in walls if sum(priors[k]) > 0}
    default = statistics.median(ratio.values()) if ratio else 1.0
    keys = {c.id: (c.config.model, c.config.dataset) for c in cells}
    costs = {c.id: _cell_prior(c) * ratio.get(keys[c.id], default) for c in cells}
    return costs, len(set(keys.values()) & set(ratio))


def arrange(sweep: Sweep, cells: list[Cell], order: str) -> tuple[list[Cell], str]:
    """The cells in the order the slots take them, and one line saying which order that is."""
    check(order)
    if order == "grid" or not cells:
        return list(cells), f"order: {order} (as the grid lists the cells)"
    costs, known = expected_costs(cells, measured(sweep))
    ranked = sorted(cells, key=lambda c: -costs[c.id])     # stable: ties keep grid order
    pairs = len({(c.config.model, c.config.dataset) for c in cells})
    source = (f"{known} of {pairs} model/dataset pairs timed by this sweep's results, "
              "the rest by the H200 prior" if known else "the H200 prior per model")
    return ranked, f"order: longest-first ({ranked[0].config.model} first; expected cost: {source})"
