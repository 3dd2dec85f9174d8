"""Analyses of trained runs beyond the headline metrics (`python -m recsys_core.analysis`):

    geometry   item-embedding geometry: spectrum, intrinsic dimension, hubness, anisotropy,
               t-SNE, CKA across models, k-NN overlap across seeds          (geometry.py)
    longtail   popularity bias: head vs tail accuracy, tail share, coverage, Gini, the most
               recommended items                                             (longtail.py)
    latency    inference latency against sequence length, log-log exponent  (latency.py)
    combine    the geometry and longtail tables of analyses done in slices, one set of
               tables, and mean ± std over seeds per dataset and model      (combine.py)

The first three read run directories (a cell's folder with result.json and best_model.pt; a
sweep folder stands for its completed cells; result files through recsys_core.train.results)
and write a table (md + csv, recsys_core.render) and a figure; combine reads only their
tables. This module holds what the first three share; it imports torch and the data code only
when a run is loaded.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsys_core.train.results import read_result, read_results


def gini(values) -> float:
    """Gini coefficient of non-negative values: 0 when all are equal, → 1 when one has all."""
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    n = len(x)
    if n == 0 or x.sum() == 0:
        return 0.0
    return float((2 * np.arange(1, n + 1) - n - 1) @ x / (n * x.sum()))


def run_dirs(paths: list[str | Path]) -> list[Path]:
    """Run folders: each path itself, or for a sweep folder its cells with a COMPLETED result
    (a cell whose result cannot be read is skipped with a warning). A run whose result.json is
    not a result record raises ValueError, a path that is neither FileNotFoundError."""
    runs = []
    for p in map(Path, paths):
        if (p / "manifest.json").exists():
            ids = [c["id"] for c in json.loads((p / "manifest.json").read_text())["cells"]]
            results, problems = read_results(p / "cells", ids)
            for path, problem in problems.items():
                print(f"warning: skipped {path}: {problem}", file=sys.stderr)
            done = set(results.loc[results["status"] == "COMPLETED", "cell"])
            runs += [p / "cells" / cid for cid in ids if cid in done]
        elif read_result(p) is not None:
            runs.append(p)
        else:
            raise FileNotFoundError(f"{p}: neither a run (result.json) nor a sweep (manifest.json)")
    return runs


@dataclass
class Run:
    path: Path
    record: dict          # result.json
    cfg: Any              # TrainConfig
    data: Any             # SequenceData
    split: Any            # LeaveOneOut
    model: Any            # the best checkpoint's model, eval mode

    @property
    def label(self) -> str:
        return f"{self.cfg.model}-{self.cfg.dataset}-L{self.cfg.max_len}-s{self.cfg.seed}"


def load_run(path: str | Path, device: str = "cpu") -> Run:
    """A finished run: its config, data, split and model with the best checkpoint's weights
    (rebuilt as recsys_core.train.eval_checkpoint does; `pop` is fitted on the train split)."""
    from recsys_core.train.eval_checkpoint import config_from_record, restore
    path = Path(path)
    record = read_result(path)
    if record is None:
        raise FileNotFoundError(f"{path}/result.json: no result")
    cfg = config_from_record(record, f"{path}/result.json", device=device)
    restored = restore(path, cfg)
    return Run(path, record, cfg, restored.data, restored.split, restored.model)


def item_embeddings(model) -> np.ndarray | None:
    """[n_items, D] item embeddings (rows 1..n_items of the table: no padding, no [mask]),
    or None for a model without any (pop)."""
    emb = getattr(model, "item_emb", None)
    if emb is None:
        return None
    return emb.weight.detach()[1: model.n_items + 1].double().cpu().numpy()


__all__ = ["Run", "gini", "item_embeddings", "load_run", "run_dirs"]
