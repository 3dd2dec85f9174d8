"""A grid's `search:` block: what `python -m launcher tune` searches (launcher/tune.py), checked
with the rest of the grid file (launcher/grid.py calls `parse_search`).

    search:
      metric: val_ndcg@10            # the validation metric to maximise (never a test metric)
      trials: 20                     # per model and dataset: the same budget for every model
      final_seeds: [42, 123, 2023]   # the seeds the emitted grid runs the best settings at
      parallel: 4                    # trials per wave, submitted together (--parallel)
      seed: 0                        # the sampler's: the same seed, the same proposals
      startup_trials: 5              # TPE proposes at random until each study has this many
      pruner: median                 # or {type: median, startup_trials: 3, warmup_epochs: 1},
                                     # {type: successive_halving, min_epochs: 1,
                                     #  reduction_factor: 3}, none
      space:                         # every model of the grid: parameter → distribution
        sasrec:
          lr: {loguniform: [1.0e-4, 1.0e-2]}
          dropout: {uniform: [0.0, 0.5]}
          num_blocks: {int: [1, 3]}
          num_heads: {choice: [1, 2]}
        gru4rec: {lr: {loguniform: [1.0e-4, 1.0e-2]}}

The grid gives one configuration per model and dataset (its cells, at one seed); each trial is
that cell with the sampled parameters. What makes the comparison fair is the same for every
model: trials, pruner, metric, epochs; only the space is the model's own (YAML anchors share
one: `sasrec: &space {...}`, `xlstm: *space`).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from launcher.resources import GridError, fail, mapping
from recsys_core.metric_names import METRICS
from recsys_core.train.config import ConfigError, TrainConfig, identity_keys

KEYS = ("metric", "trials", "final_seeds", "parallel", "seed", "startup_trials", "pruner",
        "space")
REQUIRED = ("metric", "trials", "final_seeds", "space")
KINDS = ("choice", "int", "uniform", "loguniform")
# The data, the protocol and the budget are the same for every trial: not searched.
NOT_SEARCHED = ("model", "dataset", "seed", "epochs", "patience", "monitor", "ks",
                "filter_seen", "min_user_interactions", "synthetic")
SEARCHABLE = tuple(k for k in identity_keys() if k not in NOT_SEARCHED)
PRUNERS: dict[str, dict[str, int]] = {      # each pruner's options and their defaults
    "median": {"startup_trials": 3, "warmup_epochs": 1},
    "successive_halving": {"min_epochs": 1, "reduction_factor": 3},
    "none": {},
}


@dataclass(frozen=True)
class Dimension:
    """One parameter's distribution: choice (values), int / uniform / loguniform (low, high)."""
    kind: str
    values: tuple

    def to_yaml(self) -> dict:
        return {self.kind: list(self.values)}


@dataclass(frozen=True)
class Search:
    metric: str
    trials: int
    final_seeds: tuple[int, ...]
    parallel: int
    seed: int
    startup_trials: int
    pruner: dict[str, Any]                       # {"type": name, option: value, ...}
    space: dict[str, dict[str, Dimension]]       # model → parameter → distribution

    def settings(self) -> dict:
        """What a search is: the same in every `tune` call on one directory (the trials and
        the wave size may change between calls)."""
        out = asdict(self)
        out["space"] = {m: {k: d.to_yaml() for k, d in dims.items()}
                        for m, dims in self.space.items()}
        out["final_seeds"] = list(self.final_seeds)
        for key in ("trials", "parallel"):
            del out[key]
        return out


def _int(raw: dict, key: str, default: int | None, low: int, src: str, where: str) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        fail(src, f"{where}.{key}", f"{value!r} should be an integer >= {low}")
    return value


def _number(key: str, value: Any, src: str, where: str) -> Any:
    try:
        return TrainConfig.check_value(key, value)
    except ConfigError as e:
        raise GridError(f"{src}: {where}: {e}") from None


def _dimension(key: Any, raw: Any, src: str, where: str) -> Dimension:
    if key not in SEARCHABLE:
        problem = ("is the same for every trial (data, protocol or budget): set it under fixed"
                   if key in NOT_SEARCHED else "is not a searchable parameter")
        fail(src, where, f"{key!r} {problem}", SEARCHABLE)
    raw = mapping(raw, src, where, "one of choice / int / uniform / loguniform: [values]")
    if len(raw) != 1 or next(iter(raw)) not in KINDS:
        fail(src, where, f"expected one distribution, e.g. {{loguniform: [1.0e-4, 1.0e-2]}}; "
                         f"got {raw!r}", KINDS)
    kind, values = next(iter(raw.items()))
    where = f"{where}.{kind}"
    if not isinstance(values, list) or not values:
        fail(src, where, f"expected a list, got {values!r}")
    if kind == "choice":
        values = [_number(key, v, src, f"{where}[{i}]") for i, v in enumerate(values)]
        if len(set(map(repr, values))) < len(values):
            fail(src, where, f"a value is repeated in {values}")
        return Dimension(kind, tuple(values))
    if len(values) != 2:
        fail(src, where, f"expected [low, high], got {values!r}")
    wanted = int if kind == "int" else float
    field_type = TrainConfig.model_fields[key].annotation
    if field_type is not wanted:
        fail(src, where, f"{key} is of type {getattr(field_type, '__name__', field_type)}; "
                         f"{kind} draws {wanted.__name__}s", [k for k in KINDS if k != kind])
    low, high = (_number(key, v, src, f"{where}[{i}]") for i, v in enumerate(values))
    if not low < high:
        fail(src, where, f"low {low} should be below high {high}")
    if kind == "loguniform" and low <= 0:
        fail(src, where, f"a log-uniform range starts above 0, got {low}")
    return Dimension(kind, (low, high))


def _pruner(raw: Any, src: str) -> dict[str, Any]:
    where = "search.pruner"
    if isinstance(raw, str):
        raw = {"type": raw}
    raw = mapping(raw, src, where, "type: median | successive_halving | none, and its options")
    kind = raw.get("type")
    if kind not in PRUNERS:
        fail(src, f"{where}.type", f"unknown pruner {kind!r}", PRUNERS)
    options = PRUNERS[kind]
    for key in raw:
        if key != "type" and key not in options:
            fail(src, f"{where}.{key}", f"not an option of the {kind} pruner",
                 list(options) or ["(none)"])
    low = {"reduction_factor": 2, "min_epochs": 1}
    return {"type": kind, **{k: _int(raw, k, d, low.get(k, 0), src, where)
                             for k, d in options.items()}}


def parse_search(raw: Any, src: str, models: list[str], seed_origin: str | None) -> Search:
    """The search block, checked. `models`: the models the grid's cells have; `seed_origin`:
    where the grid sets seed (one value only: the trials' seed)."""
    raw = mapping(raw, src, "search", "metric, trials, final_seeds, space, ...")
    for key in raw:
        if key not in KEYS:
            fail(src, f"search.{key}", "unknown key in the search block", KEYS)
    for key in REQUIRED:
        if key not in raw:
            fail(src, "search", f"{key} is not set", REQUIRED)
    metric = raw["metric"]
    if isinstance(metric, str) and metric.startswith("test_"):
        fail(src, "search.metric", f"{metric!r}: a search optimises a validation metric, "
                                   "never a test one; e.g. " + metric.replace("test_", "val_", 1))
    if not isinstance(metric, str) or not re.fullmatch(rf"val_({'|'.join(METRICS)})@\d+", metric):
        fail(src, "search.metric", f"{metric!r} should be val_<metric>@<k>",
             [f"val_{m}@10" for m in METRICS])
    if seed_origin and not seed_origin.startswith("fixed"):
        fail(src, seed_origin, "a search trains every trial at one seed: put one seed under "
                               "fixed, and the final runs' seeds in search.final_seeds")
    seeds = raw["final_seeds"]
    if not isinstance(seeds, list) or not seeds or len(set(map(repr, seeds))) < len(seeds):
        fail(src, "search.final_seeds", f"{seeds!r} should be a list of distinct seeds, "
                                        "e.g. [42, 123, 2023]")
    seeds = [_number("seed", s, src, f"search.final_seeds[{i}]") for i, s in enumerate(seeds)]
    space_raw = mapping(raw["space"], src, "search.space", "model: {parameter: distribution}")
    for model in space_raw:
        if model not in models:
            fail(src, f"search.space.{model}", "no cell of the grid has this model", models)
    missing = [m for m in models if m not in space_raw]
    if missing:
        fail(src, "search.space", f"no space for {', '.join(missing)}: every model of the grid "
                                  "is searched with the same budget (exclude it from the grid, "
                                  "or give it a space)", models)
    space = {}
    for model, params in space_raw.items():
        params = mapping(params, src, f"search.space.{model}", "parameter: distribution")
        if not params:
            fail(src, f"search.space.{model}", "empty space: nothing to search")
        space[model] = {k: _dimension(k, d, src, f"search.space.{model}.{k}")
                        for k, d in params.items()}
    trials = _int(raw, "trials", None, 1, src, "search")
    return Search(metric=metric, trials=trials, final_seeds=tuple(seeds),
                  parallel=_int(raw, "parallel", 4, 1, src, "search"),
                  seed=_int(raw, "seed", 0, 0, src, "search"),
                  startup_trials=_int(raw, "startup_trials", min(5, trials), 0, src, "search"),
                  pruner=_pruner(raw.get("pruner", "median"), src), space=space)
