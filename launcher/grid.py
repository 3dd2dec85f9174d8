"""Grid files: a study written as YAML → validated, ordered cells (one training run each).

    name: paper                        # default: the file's stem; names the sweep
    description: free text
    profile: a100                      # slurm/profiles/a100.yaml: default resources
    fixed: {epochs: 200, patience: 3}  # set in every cell
    grid: {model: [sasrec, xlstm], seed: [42, 123]}          # cartesian product, file order
    zip: [{embedding_dim: [64, 128], num_blocks: [1, 2]}]    # advanced together, × grid
    exclude: [{model: sasrec, seed: [123]}]                  # drop matching cells
    overrides: [{when: {model: xlstm}, set: {lr: 3.0e-4, resources: {gpus: 2}}}]
    resources: {partition: gpu, gpus: 1, cpus: 8, mem: 64G, time: "04:00:00"}
                                       # cells_per_job: 6 packs 6 cells in one SLURM job
    search: {metric: val_ndcg@10, trials: 20, final_seeds: [42, 123], space: {...}}
                                       # what `tune` searches (launcher/search.py); `sweep`
                                       # runs the cells as they are

Parameters are `TrainConfig` fields, less `out`, `run_id` and `wandb_group` (the launcher sets
them), and the debug hooks of the failure-path tests (recsys_core/train/hooks.py). A `when`/`exclude` value may be a list, meaning "any of"; both match a cell as fixed, grid
and zip define it, before any override, and later overrides win. Everything is checked before
anything runs: a mistake raises `GridError` naming the file, the field and the valid choices.
A cell's id hashes its parameters and resources (but cells_per_job, how cells are packed into
jobs): stable across reloads and key order. Each cell
carries its TrainConfig, built and validated once here; the sweep writes it to cell.json.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from launcher.resources import (PROFILES_DIR, GridError, Resources, fail, load_profile,
                                mapping, merge_resources, parse_resources, read_scalar,
                                read_yaml)
from launcher.search import Search, parse_search
from recsys_core.models.xlstm_shapes import check_triton_shape
from recsys_core.train.config import CHOICES, ConfigError, TrainConfig, defaults
from recsys_core.train.hooks import HOOK_KEYS, DebugHooks

__all__ = ["Cell", "Grid", "GridError", "Resources", "cell_config", "cell_id", "expand",
           "load_grid", "make_cell"]

TOP_KEYS = ("name", "description", "profile", "fixed", "grid", "zip", "exclude", "overrides",
            "resources", "search")
LAUNCHER_KEYS = ("out", "run_id", "wandb_group")
PARAM_KEYS = tuple(k for k in TrainConfig.model_fields if k not in LAUNCHER_KEYS)
LABEL_KEYS = ("model", "dataset", "max_len", "seed")
DEFAULTS = defaults()


# --- parameters -------------------------------------------------------------------------------

def _check_key(key: Any, src: str, where: str) -> None:
    if key in LAUNCHER_KEYS:
        fail(src, where, f"{key} is set by the launcher, not by a grid file", PARAM_KEYS)
    if key not in PARAM_KEYS and key not in HOOK_KEYS:
        fail(src, where, f"unknown parameter {key!r}", PARAM_KEYS)


def _param(key: Any, value: Any, src: str, where: str) -> Any:
    """One parameter's value, checked on its own and normalised (e.g. lr: 1 → 1.0)."""
    _check_key(key, src, where)
    if key in HOOK_KEYS:
        return getattr(DebugHooks.from_dict({key: value}, f"{src}: {where}"), key)
    if value is None and DEFAULTS[key] is not None:
        fail(src, where, f"null is not allowed; {key} is of type {type(DEFAULTS[key]).__name__}")
    if key in ("model", "dataset") and value not in CHOICES[key]:
        fail(src, where, f"unknown {key} {value!r}", CHOICES[key])
    try:
        return TrainConfig.check_value(key, value)
    except ConfigError as e:
        raise GridError(f"{src}: {where}: {e}") from None


def _params(raw: Any, src: str, where: str) -> dict[str, Any]:
    raw = mapping(raw, src, where, "parameter: value")
    return {k: _param(k, v, src, f"{where}.{k}") for k, v in raw.items()}


def _values(key: Any, raw: Any, src: str, where: str) -> list[Any]:
    """An axis or a zip list: one or more values of one parameter."""
    _check_key(key, src, where)
    if not isinstance(raw, list):
        fail(src, where, f"must be a list of values, got {raw!r}; write [{raw}] for one value "
                          f"or put {key} under fixed")
    if not raw:
        fail(src, where, "empty list: the grid would have no cells")
    return [_param(key, v, src, f"{where}[{i}]") for i, v in enumerate(raw)]


def _condition(raw: Any, src: str, where: str, keys: dict[str, str]) -> dict[str, list[Any]]:
    """`{key: value or [any of values]}` over the keys that fixed, grid and zip set."""
    raw = mapping(raw, src, where, "parameter: value or [values]")
    if not raw:
        fail(src, where, "empty condition (it would match every cell)")
    cond = {}
    for key, value in raw.items():
        if key not in keys:
            fail(src, f"{where}.{key}", "can only test keys set by fixed, grid or zip", keys)
        cond[key] = ([_param(key, v, src, f"{where}.{key}[{i}]") for i, v in enumerate(value)]
                     if isinstance(value, list) else [_param(key, value, src, f"{where}.{key}")])
    return cond


def _matches(cond: dict[str, list[Any]], params: dict[str, Any]) -> bool:
    return all(params[k] in values for k, values in cond.items())


# --- the grid ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Override:
    when: dict[str, list[Any]]          # empty: every cell
    params: dict[str, Any]
    resources: dict[str, Any]


@dataclass(frozen=True)
class Grid:
    path: Path
    name: str
    profile: str | None
    fixed: dict[str, Any]
    axes: dict[str, list[Any]]          # grid: key → values, in file order
    zips: list[dict[str, list[Any]]]    # each group's lists have one length
    exclude: list[dict[str, list[Any]]]
    overrides: list[Override]
    resources: dict[str, Any]           # the profile's, updated by the file's
    search: Search | None = None        # the search block (launcher/tune.py)


@dataclass(frozen=True)
class Cell:
    id: str                             # sha256 of params + resources, 12 hex digits
    name: str                           # a label, e.g. sasrec-ml-1m-L64-s42; not unique
    params: dict[str, Any]              # every parameter the grid file sets, normalised
    resources: Resources
    config: TrainConfig = field(compare=False, repr=False)   # what the job trains
    hooks: dict[str, Any] = field(default_factory=dict, compare=False)   # debug hooks set


def cell_id(params: dict[str, Any], resources_json: str, trial: str | None = None) -> str:
    """sha256 of a cell's parameters and resources (and, for a search's trial, which trial it
    is: two trials may draw the same values), 12 hex digits."""
    # = json.dumps({"params": ..., "resources": ..., "trial": ...}, sort_keys=True), faster
    blob = (f'{{"params": {json.dumps(params, sort_keys=True, default=str)}, '
            f'"resources": {resources_json}' +
            (f', "trial": {json.dumps(trial)}' if trial is not None else "") + "}")
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def make_cell(cell_id: str, name: str, params: dict[str, Any], resources: Resources,
              sweep_name: str, source: str) -> Cell:
    """A cell with its TrainConfig built (`cell_config`) and its debug hooks set apart."""
    return Cell(cell_id, name, params, resources,
                cell_config(params, resources, cell_id, sweep_name, source),
                {k: v for k, v in params.items() if k in HOOK_KEYS})


def cell_config(params: dict[str, Any], resources: Resources, cell_id: str, sweep_name: str,
                source: str) -> TrainConfig:
    """A cell's TrainConfig: its parameters, one data-parallel process per GPU (gpus × nodes)
    unless the grid sets num_processes, and what the launcher owns (run id, W&B group)."""
    values = {k: v for k, v in params.items() if k not in HOOK_KEYS}
    gpus = resources.gpus * resources.nodes
    if gpus > 1 and "num_processes" not in values:
        values["num_processes"] = gpus
    elif gpus and values.get("num_processes", gpus) != gpus:
        raise ConfigError(f"{source}: num_processes={values['num_processes']} but the job gets "
                          f"{gpus} GPUs (gpus × nodes); one process per GPU")
    config = TrainConfig.from_dict({**values, "run_id": cell_id, "wandb_group": sweep_name},
                                   source)
    if config.model == "xlstm" and gpus and config.device != "cpu":
        try:    # what the job would find only at its start, on the GPU, once per cell
            check_triton_shape(config.embedding_dim, config.num_heads)
        except ValueError as e:
            raise ConfigError(f"{source}: {e}") from None
    return config


def _list(raw: dict, key: str, src: str, example: str) -> list:
    value = raw.get(key, [])
    if not isinstance(value, list):
        fail(src, key, f"expected a list, e.g. {example}")
    return value


def load_grid(path: str | Path, profiles_dir: str | Path | None = None) -> Grid:
    """Read and check a grid file: everything that can be checked without expanding it."""
    path = Path(path)
    src = str(path)
    raw = read_yaml(path, "grid file")
    for key in raw:
        if key not in TOP_KEYS:
            fail(src, str(key), "unknown top-level key", TOP_KEYS)
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        fail(src, "name", f"{name!r} should be letters, digits, '.', '_' or '-' (a folder name)")
    if not isinstance(raw.get("description", ""), str):   # for people reading the file
        fail(src, "description", "should be a string")

    fixed = _params(raw.get("fixed", {}), src, "fixed")
    origin = {k: f"fixed.{k}" for k in fixed}        # where each base key is set
    axes = {}
    for key, values in mapping(raw.get("grid", {}), src, "grid", "parameter: [values]").items():
        if key in origin:
            fail(src, f"grid.{key}", f"also set in {origin[key]}; a key is fixed or an axis")
        axes[key] = _values(key, values, src, f"grid.{key}")
        origin[key] = f"grid.{key}"
    zips = []
    for g, group in enumerate(_list(raw, "zip", src, "- {embedding_dim: [64, 128], "
                                                     "num_blocks: [1, 2]}")):
        where = f"zip[{g}]"
        if not mapping(group, src, where, "parameter: [values], all of one length"):
            fail(src, where, "empty group")
        for key in group:
            if key in origin:
                fail(src, f"{where}.{key}", f"also set in {origin[key]}; a key is set once")
            origin[key] = f"{where}.{key}"
        lists = {key: _values(key, values, src, f"{where}.{key}") for key, values in group.items()}
        if len({len(v) for v in lists.values()}) > 1:
            fail(src, where, "lists of unequal length: " + ", ".join(
                f"{k} has {len(v)}" for k, v in lists.items()))
        zips.append(lists)
    for key in ("model", "dataset"):
        if key not in origin:
            fail(src, "fixed", f"{key} is not set; put it under fixed, grid or zip")

    exclude = [_condition(e, src, f"exclude[{i}]", origin)
               for i, e in enumerate(_list(raw, "exclude", src, "- {model: pop, seed: 123}"))]
    overrides = []
    for i, o in enumerate(_list(raw, "overrides", src, "- {when: {...}, set: {...}}")):
        where = f"overrides[{i}]"
        for key in mapping(o, src, where, "when: {...}, set: {...}"):
            if key not in ("when", "set"):
                fail(src, f"{where}.{key}", "unknown key in an override", ["when", "set"])
        when = _condition(o["when"], src, f"{where}.when", origin) if "when" in o else {}
        to_set = dict(mapping(o.get("set"), src, f"{where}.set", "parameter: value"))
        if not to_set:
            fail(src, f"{where}.set", "nothing to set")
        res = parse_resources(to_set.pop("resources", {}), src, f"{where}.set.resources")
        overrides.append(Override(when, _params(to_set, src, f"{where}.set"), res))

    profiles = Path(profiles_dir) if profiles_dir is not None else PROFILES_DIR
    resources = load_profile(raw["profile"], src, profiles) if "profile" in raw else {}
    resources = merge_resources(resources, parse_resources(raw.get("resources", {}), src,
                                                             "resources"))
    search = None
    if "search" in raw:
        models = [fixed["model"]] if "model" in fixed else axes.get("model") or next(
            g["model"] for g in zips if "model" in g)
        search = parse_search(raw["search"], src, list(dict.fromkeys(models)),
                              origin.get("seed"))
    return Grid(path, name, raw.get("profile"), fixed, axes, zips, exclude,
                overrides, resources, search)


def _label(params: dict[str, Any], extra_keys: Iterable[str]) -> str:
    model, dataset, max_len, seed = (params.get(k, DEFAULTS[k]) for k in LABEL_KEYS)
    extras = "".join(f"-{k}={params[k]}" for k in extra_keys if k in params)
    return f"{model}-{dataset}-L{max_len}-s{seed}{extras}"


def expand(grid: Grid) -> list[Cell]:
    """Grid axes (product, file order) × zip groups → minus exclude → overrides, in order."""
    src = str(grid.path)
    zip_keys = [list(group) for group in grid.zips]
    zip_rows = [list(zip(*group.values())) for group in grid.zips]
    bases = []
    for combo in itertools.product(*grid.axes.values()):
        for rows in itertools.product(*zip_rows):
            params = {**grid.fixed, **dict(zip(grid.axes, combo))}
            for keys, row in zip(zip_keys, rows):
                params.update(zip(keys, row))
            bases.append(params)

    for i, cond in enumerate(grid.exclude):
        if not any(_matches(cond, p) for p in bases):
            fail(src, f"exclude[{i}]", f"{json.dumps(cond, default=str)} matches no cell")
    bases = [p for p in bases if not any(_matches(c, p) for c in grid.exclude)]
    if not bases:
        fail(src, "exclude", "every cell is excluded")

    extra_keys = [k for k in [*grid.axes, *itertools.chain(*zip_keys)] if k not in LABEL_KEYS]
    hits = [0] * len(grid.overrides)
    resources_for: dict[tuple[int, ...], tuple[Resources, str]] = {}   # by overrides matched
    cells: list[Cell] = []
    by_id: dict[str, tuple[Cell, dict[str, Any]]] = {}     # id → (cell, its base params)
    for base in bases:
        matched = [i for i, o in enumerate(grid.overrides) if _matches(o.when, base)]
        params = dict(base)
        for i in matched:
            hits[i] += 1
            params.update(grid.overrides[i].params)
        params = {k: copy.deepcopy(v) if isinstance(v, (list, dict)) else v
                  for k, v in params.items()}
        key = tuple(i for i in matched if grid.overrides[i].resources)
        if key not in resources_for:
            merged = grid.resources
            for i in key:
                merged = merge_resources(merged, grid.overrides[i].resources)
            res = Resources(**copy.deepcopy(merged))
            resources_for[key] = (res, json.dumps(res.identity(), sort_keys=True))
        res, res_json = resources_for[key]
        name = _label(params, extra_keys)
        try:
            cell = make_cell(cell_id(params, res_json), name, params, res, grid.name,
                             f"cell {name}")
        except ConfigError as e:
            raise GridError(f"{src}: {e}") from None
        if cell.id in by_id:
            first, first_base = by_id[cell.id]
            diff = ", ".join(f"{k}={first_base[k]} vs {base[k]}" for k in base
                             if first_base[k] != base[k])
            fail(src, "cells", f"{first.name} and {cell.name} resolve to the same parameters "
                  f"and resources (id {cell.id}): " + (
                      f"overrides make {diff} equal" if diff else
                      "a value is repeated in a grid or zip list"))
        by_id[cell.id] = (cell, base)
        cells.append(cell)
    for i, n in enumerate(hits):
        if not n:
            fail(src, f"overrides[{i}].when", f"{json.dumps(grid.overrides[i].when, default=str)}"
                  " matches no cell (exclude is applied first)")
    return cells


def where_clause(clause: str) -> tuple[str, list]:
    """`KEY=V1,V2` → (KEY, [V1, V2]), the values read as a grid file's (`1e-3` is a number)."""
    key, eq, values = clause.partition("=")
    parts = values.split(",")
    if not eq or not key or not values or not all(v.strip() for v in parts):
        raise GridError(f"--where {clause!r}: expected KEY=VALUE[,VALUE...]")
    return key, [read_scalar(v) for v in parts]


def unknown_values(cells, key: str, wanted: list) -> tuple[list, list[str]]:
    """(the wanted values no cell has for key, the values the cells have, as text)."""
    have = {c.params.get(key) for c in cells}
    return [v for v in wanted if v not in have], sorted(str(v) for v in have)


def absent_values(cells, where: list[str], src: str) -> list[str]:
    """A line for each --where value that none of the cells has (for `resume`, whose sweep
    may lack cells that a later `sweep --extend` adds: a note there, not an error)."""
    lines = []
    for clause in where:
        key, wanted = where_clause(clause)
        missing, seen = unknown_values(cells, key, wanted)
        if missing:
            lines.append(f"--where {clause!r}: no cell of {src} has {key} in {missing} "
                         f"(its values: {', '.join(seen)})")
    return lines


def select(cells, where: list[str], src: str, strict: bool = True):
    """The cells whose parameters match every `KEY=V1,V2` (values read as a grid file's are:
    `1e-3` is a number). `strict`: a value that no cell has is an error (a typo in a list
    would drop its cells without a word), checked against all the cells given."""
    everything = list(cells)
    for clause in where:
        key, wanted = where_clause(clause)
        keys = sorted({k for c in everything for k in c.params})
        if key not in keys:
            raise GridError(f"--where {clause!r}: {src} has no parameter {key!r}; "
                            f"its cells have: {', '.join(keys)}")
        missing, seen = unknown_values(everything, key, wanted)
        if strict and missing:
            raise GridError(f"--where {clause!r}: no cell of {src} has {key} in {missing}; "
                            f"its values: {', '.join(seen)}")
        chosen = [c for c in cells if c.params.get(key) in wanted]
        if not chosen:
            raise GridError(f"--where {clause!r}: no cell of {src} has {key} in {wanted}; "
                            f"its values: {', '.join(seen)}")
        cells = chosen
    return cells
