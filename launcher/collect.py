"""A sweep's manifest, result files and cell states → the `Aggregate` frame: one row per
manifest cell with its resources, its configuration (the cell's parameters, TrainConfig's
defaults filled in), every other field of its result.json (read by
`recsys_core.train.results.read_results`, cached in SWEEP/.aggregate-cache/), its state and
reason, and its GPU- and CPU-hours. The tables (tables.py), the plots and results.parquet are
made from this frame alone.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from launcher.grid import GridError, select, unknown_values, where_clause
from launcher.sweep import Sweep
from recsys_core.train.config import TrainConfig, column_keys, defaults
from recsys_core.train.hooks import HOOK_KEYS
from recsys_core.train.results import read_results

METRICS = {"test_recall@10": "Recall@10", "test_ndcg@10": "NDCG@10", "test_mrr@10": "MRR@10"}
# Cold-start users (recsys_core/train/cold_start.py): a column group of the main table where a
# sweep has any; the model's metrics and the popularity fallback's on the same users.
COLD_METRICS = {"cold_test_recall@10": "cold Recall@10", "cold_test_ndcg@10": "cold NDCG@10",
                "cold_pop_test_recall@10": "cold pop Recall@10",
                "cold_pop_test_ndcg@10": "cold pop NDCG@10"}
# The analyses a result records (recsys_core/train/recorded.py): the long tail of the test
# split (RQ2) and the item embeddings' geometry (RQ4), each a table where any cell has it. Not
# among results.FIELDS: a declared field is a column of every sweep's frame (and
# results.parquet), and cells trained before them have none.
LONGTAIL_METRICS = {"longtail_recall@10_head": "Recall@10 head",
                    "longtail_recall@10_mid": "Recall@10 mid",
                    "longtail_recall@10_tail": "Recall@10 tail",
                    "longtail_share_tail_in_top10": "tail share of top 10",
                    "longtail_coverage": "coverage",
                    "longtail_gini_recommendations": "Gini of recommendations"}
GEOMETRY_METRICS = {"geometry_dims_90": "dims for 90% variance",
                    "geometry_participation_ratio": "participation ratio",
                    "geometry_anisotropy": "anisotropy",
                    "geometry_hub_gini": "hubness Gini",
                    "geometry_hub_skewness": "hub skewness"}
RECORDED = {"longtail": LONGTAIL_METRICS, "geometry": GEOMETRY_METRICS}
ALWAYS = ("model", "dataset", "max_len")
CACHE = ".aggregate-cache"

DEFAULTS = defaults()
# Never a column of the tables (TrainConfig declares which of its fields are): where and how a
# run went, the debug hooks, and the seed (the replicates a mean is taken over). In the frame
# they come from the result (what the run had).
NOT_CONFIG = {*(set(TrainConfig.model_fields) - set(column_keys())), *HOOK_KEYS, "seed"}


@dataclass
class Aggregate:
    name: str
    root: Path
    cells: pd.DataFrame                 # one row per manifest cell, manifest order
    keys: list[str]                     # configuration columns of the tables: model, dataset, ...
    state_source: str
    problems: dict[str, str] = field(default_factory=dict)   # unreadable file → why

    @property
    def compare_keys(self) -> list[str]:
        """The keys that define a comparison group (the paired tests): the dataset, max_len
        and every key the grid crosses for several models (one that takes several values
        within a dataset for two models or more, e.g. embedding_dim in a dims grid). Not the
        model's own settings, constant for a model on a dataset (an override such as SASRec's
        1 head against the others' 2, or the S3Rec files' 1 head for all but xLSTM, must not
        put a model in a group of its own), nor `variant_keys`."""
        crossed = self._varying_within_model_and_dataset
        return [k for k in self.keys if k != "model" and
                (k in ALWAYS or sum(1 for m in crossed.values() if k in m) >= 2)]

    @property
    def variant_keys(self) -> list[str]:
        """Keys that vary within a dataset for one model alone: that model's variants (e.g.
        BERT4Rec on ML-1M at epoch caps 400 and 800), compared as separate rows."""
        crossed = self._varying_within_model_and_dataset
        return [k for k in self.keys if k not in ALWAYS and
                sum(1 for m in crossed.values() if k in m) == 1]

    @cached_property      # compare_keys and variant_keys both ask; the cells do not change
    def _varying_within_model_and_dataset(self) -> dict[str, set[str]]:
        return varying_within_model_and_dataset(self.cells, [k for k in self.keys
                                                             if k not in ALWAYS])


def varying_within_model_and_dataset(frame: pd.DataFrame, keys: list[str]) -> dict[str, set[str]]:
    """model → those of `keys` that take several values for it within one dataset (rows of
    `frame`: cells, or the main table's configurations)."""
    if not keys or frame.empty:
        return {}
    counts = frame.groupby(["model", "dataset"], sort=False)[keys].nunique(dropna=False)
    return {m: set(c for c in keys if (g[c] > 1).any())
            for m, g in counts.groupby(level="model", sort=False)}


def _manifest_frame(manifest: dict) -> tuple[pd.DataFrame, list[str]]:
    """Cells with their resources and configuration (the TrainConfig default where a cell
    does not set a parameter; lists and dicts as JSON text); and the keys of the tables:
    model, dataset, max_len and every other parameter that takes more than one value, but
    those in NOT_CONFIG."""
    names = list(dict.fromkeys(k for c in manifest["cells"] for k in c["params"]))
    config = [*ALWAYS, "seed", *(k for k in dict.fromkeys([*DEFAULTS, *names])
                                 if k not in NOT_CONFIG and k not in ALWAYS)]
    rows = []
    for c in manifest["cells"]:
        r = c["resources"]
        row = {"id": c["id"], "name": c["name"], "gpus": r.get("gpus") or 0,
               "nodes": r.get("nodes") or 1, "cpus": r.get("cpus")}
        for k in config:
            v = c["params"].get(k, DEFAULTS.get(k))
            row[k] = json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v
        rows.append(row)
    cells = pd.DataFrame(rows, columns=["id", "name", "gpus", "nodes", "cpus", *config])
    varying = [k for k in names if k not in NOT_CONFIG and k not in ALWAYS
               and cells[k].nunique(dropna=False) > 1]
    return cells, [*ALWAYS, *varying]


def _states(sweep: Sweep, results: pd.DataFrame) -> tuple[dict[str, tuple], str]:
    """cell id → (state, reason): the launcher's status where its executors can be asked,
    else the result files."""
    if sweep.latest_submissions():
        from launcher.executors import ExecutorError
        from launcher.status import cell_states
        try:
            rows = cell_states(sweep)
            return {r["id"]: (r["state"], r["reason"]) for r in rows}, "launcher status"
        except (ExecutorError, OSError) as e:
            note = f"SLURM not reachable ({type(e).__name__}: {e}); states from the result files"
    else:
        note = "never submitted; states from the result files"
    return dict(zip(results["cell"], zip(results["status"], results["reason"]))), note


def load(sweep_roots: str | Path | list[str | Path], where: list[str] | tuple = ()
         ) -> Aggregate:
    """One sweep, or several aggregated as one (a study grown over several grids: the main
    sweep with RQ2's, say); a cell in several of them (copied by `--reuse`, or run again in
    another) counts once: from the first where it COMPLETED, else from the first. `where`:
    only the cells whose parameters match every `KEY=V1,V2`."""
    roots = [sweep_roots] if isinstance(sweep_roots, (str, Path)) else list(sweep_roots)
    sweeps = [Sweep(root) for root in roots]
    manifests = [sweep.manifest() for sweep in sweeps]
    home = _home_sweeps(sweeps, manifests)
    chosen, misses = [], []
    every = [SimpleNamespace(params=c["params"]) for m in manifests for c in m["cells"]]
    for clause in where:     # a value no sweep has is a typo (one sweep may lack a value)
        key, wanted = where_clause(clause)
        missing, seen = unknown_values(every, key, wanted)
        if missing and any(key in c.params for c in every):
            raise ValueError(f"--where {clause!r}: no cell of {', '.join(map(str, roots))} "
                             f"has {key} in {missing}; their values: {', '.join(seen)}")
    for k, (sweep, manifest) in enumerate(zip(sweeps, manifests)):
        mine = [c for c in manifest["cells"] if home.get(c["id"], k) == k]
        if where:
            wrapped = [SimpleNamespace(params=c["params"], record=c) for c in mine]
            try:
                mine = [w.record for w in select(wrapped, list(where), str(sweep.root),
                                                 strict=False)]
            except GridError as e:     # none here; the other sweeps may have some
                mine = []
                misses.append(str(e))
        chosen.append(mine)
    if not any(chosen):
        raise ValueError("; ".join(misses) or f"{', '.join(map(str, roots))}: no cells")
    cells, keys = _manifest_frame({"cells": [c for mine in chosen for c in mine]})
    parts, problems, states, notes = [], {}, {}, []
    for sweep, mine in zip(sweeps, chosen):
        if not mine:
            continue
        part, unreadable = read_results(sweep.root / "cells", [c["id"] for c in mine],
                                        sweep.root / CACHE)
        parts.append(part)
        problems.update(unreadable)
        found, note = _states(sweep, part)
        states.update(found)
        notes.append(note if len(sweeps) == 1 else f"{sweep.root}: {note}")
    results, source = pd.concat(parts, ignore_index=True), "; ".join(dict.fromkeys(notes))
    name = " + ".join(m.get("name", s.root.name) for s, m in zip(sweeps, manifests))
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
    cells.loc[cells["state"] != "COMPLETED",
              [*METRICS, *COLD_METRICS,
               *(m for group in RECORDED.values() for m in group if m in cells)]] = np.nan
    wall = cells["wall_time_s"].fillna(0.0)
    cells["gpu_hours"] = wall * cells["gpus"] * cells["nodes"] / 3600
    cells["cpu_hours"] = wall * cells["cpus"].fillna(1).astype(float) * cells["nodes"] / 3600
    return Aggregate(name, sweeps[0].root, cells, keys, source, problems)


def _home_sweeps(sweeps: list[Sweep], manifests: list[dict]) -> dict[str, int]:
    """cell id → the index of the sweep it counts from, for the ids in more than one."""
    ids = [{c["id"] for c in m["cells"]} for m in manifests]
    home = {}
    for cid in set().union(*ids):
        holders = [k for k, mine in enumerate(ids) if cid in mine]
        if len(holders) > 1:
            from jobs.pack import completed
            done = [k for k in holders if completed(sweeps[k].cell_dir(cid))]
            home[cid] = (done or holders)[0]
    return home
