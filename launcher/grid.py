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

Parameters are `TrainConfig` fields, less `out`, `run_id` and `wandb_group` (the launcher sets
them). A `when`/`exclude` value may be a list, meaning "any of"; both match a cell as fixed, grid
and zip define it, before any override, and later overrides win. Everything is checked before
anything runs: a mistake raises `GridError` naming the file, the field and the valid choices.
A cell's id hashes its parameters and resources: stable across reloads and key order.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, NoReturn

import yaml

from recsys_core.train.config import CHOICES, ConfigError, TrainConfig

PROFILES_DIR = Path(__file__).resolve().parents[1] / "slurm" / "profiles"
TOP_KEYS = ("name", "description", "profile", "fixed", "grid", "zip", "exclude", "overrides",
            "resources")
LAUNCHER_KEYS = ("out", "run_id", "wandb_group")
_DEFAULTS = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
             for f in dataclasses.fields(TrainConfig)}
PARAM_KEYS = tuple(k for k in _DEFAULTS if k not in LAUNCHER_KEYS)
LABEL_KEYS = ("model", "dataset", "max_len", "seed")
TIME_FORMATS = "MINUTES, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS"


class GridError(ValueError):
    """A grid file is wrong; the message names the file, the field and the valid choices."""


def _fail(src: str, where: str, problem: str, valid: Iterable[Any] | None = None) -> NoReturn:
    valid_text = f"; valid: {', '.join(map(str, valid))}" if valid is not None else ""
    raise GridError(f"{src}: {where}: {problem}{valid_text}")



# --- resources --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Resources:
    """What one cell's SLURM job asks for; None leaves it to the cluster's default."""
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus: int = 0                   # per node
    cpus: int | None = None         # CPU cores per node
    mem: str | None = None          # per node: "64G", "500M", "64000" (MB)
    time: str | None = None         # SLURM syntax, see TIME_FORMATS
    constraint: str | None = None
    nodes: int = 1
    slurm_extra: dict[str, Any] = field(default_factory=dict)   # more sbatch options, no "--"

    @property
    def time_minutes(self) -> int | None:
        return None if self.time is None else _time_minutes(self.time)

    @property
    def mem_mb(self) -> int | None:
        if self.mem is None:
            return None
        number, unit = re.fullmatch(r"(\d+)([KMGT]?)", self.mem).groups()
        kib = int(number) * {"K": 1, "": 1024, "M": 1024, "G": 1024**2, "T": 1024**3}[unit]
        return (kib + 1023) // 1024


RESOURCE_KEYS = tuple(f.name for f in dataclasses.fields(Resources))


def _time_minutes(text: str) -> int | None:
    """SLURM's --time syntax → minutes (rounded up); None if malformed or zero."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not m:
        return None
    days, parts = m.group(1), [int(p) for p in m.groups()[1:] if p is not None]
    if any(p >= 60 for p in parts[1:]):
        return None
    if days is not None:      # D-HH[:MM[:SS]]
        h, mi, s = (parts + [0, 0])[:3]
        seconds = ((int(days) * 24 + h) * 60 + mi) * 60 + s
    else:                     # MINUTES, MM:SS, HH:MM:SS
        h, mi, s = {1: (0, parts[0], 0), 2: (0, *parts), 3: tuple(parts)}[len(parts)]
        seconds = (h * 60 + mi) * 60 + s
    return -(-seconds // 60) if seconds > 0 else None


def _check_resource(key: str, value: Any, src: str, where: str) -> Any:
    if isinstance(value, bool) and key != "slurm_extra":
        _fail(src, where, f"{value!r} is not a valid {key}")
    if key in ("gpus", "cpus", "nodes"):
        low = 0 if key == "gpus" else 1
        if not isinstance(value, int) or value < low:
            _fail(src, where, f"{value!r} should be an integer >= {low}")
    elif key == "mem":
        value = str(value).upper() if isinstance(value, (int, str)) else ""
        if not re.fullmatch(r"[1-9]\d*[KMGT]?", value):
            _fail(src, where, f"{value!r} is not a memory size", ["64G", "500M", "64000 (MB)"])
    elif key == "time":
        value = str(value) if isinstance(value, (int, str)) else ""
        if _time_minutes(value) is None:
            _fail(src, where, f"{value!r} is not a positive SLURM time", [TIME_FORMATS])
    elif key == "slurm_extra":
        for k, v in _mapping(value, src, where, "sbatch option: value, e.g. mail-type: END"
                             ).items():
            if not isinstance(k, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", k):
                _fail(src, f"{where}.{k}", "should be an sbatch option without leading dashes")
            if not isinstance(v, (str, int, float, bool)):
                _fail(src, f"{where}.{k}", f"{v!r} should be a string, number or boolean")
        value = dict(value)
    elif not isinstance(value, str) or not value.strip():  # partition, account, qos, constraint
        _fail(src, where, f"{value!r} should be a non-empty string")
    # Resource values become #SBATCH lines: a newline would start a line of shell script.
    for v in (value.values() if isinstance(value, dict) else [value]):
        if isinstance(v, str) and re.search(r"[\x00-\x1f\x7f]", v):
            _fail(src, where, f"{v!r} contains a newline or control character")
    return value


def _parse_resources(raw: Any, src: str, where: str) -> dict[str, Any]:
    out = {}
    for key, value in _mapping(raw, src, where, "resource: value").items():
        if key not in RESOURCE_KEYS:
            _fail(src, f"{where}.{key}", "unknown resource", RESOURCE_KEYS)
        out[key] = _check_resource(key, value, src, f"{where}.{key}")
    return out


def _merge_resources(base: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    extra = {**base.get("slurm_extra", {}), **more.get("slurm_extra", {})}
    return {**base, **more, **({"slurm_extra": extra} if extra else {})}


# --- parameters -------------------------------------------------------------------------------

def _mapping(raw: Any, src: str, where: str, what: str) -> dict:
    if not isinstance(raw, dict):
        _fail(src, where, f"expected a mapping ({what}), got {type(raw).__name__}")
    return raw


def _check_key(key: Any, src: str, where: str) -> None:
    if key in LAUNCHER_KEYS:
        _fail(src, where, f"{key} is set by the launcher, not by a grid file", PARAM_KEYS)
    if key not in PARAM_KEYS:
        _fail(src, where, f"unknown parameter {key!r}", PARAM_KEYS)


def _param(key: Any, value: Any, src: str, where: str) -> Any:
    """One TrainConfig value, checked on its own and normalised (e.g. lr: 1 → 1.0)."""
    _check_key(key, src, where)
    if value is None and _DEFAULTS[key] is not None:
        _fail(src, where, f"null is not allowed; {key} is of type {type(_DEFAULTS[key]).__name__}")
    if key in ("model", "dataset") and value not in CHOICES[key]:
        _fail(src, where, f"unknown {key} {value!r}", CHOICES[key])
    try:
        return getattr(TrainConfig.from_dict({key: value}, where), key)
    except (ConfigError, TypeError, ValueError) as e:
        raise GridError(f"{src}: {e}") from None


def _params(raw: Any, src: str, where: str) -> dict[str, Any]:
    raw = _mapping(raw, src, where, "parameter: value")
    return {k: _param(k, v, src, f"{where}.{k}") for k, v in raw.items()}


def _values(key: Any, raw: Any, src: str, where: str) -> list[Any]:
    """An axis or a zip list: one or more values of one parameter."""
    _check_key(key, src, where)
    if not isinstance(raw, list):
        _fail(src, where, f"must be a list of values, got {raw!r}; write [{raw}] for one value "
                          f"or put {key} under fixed")
    if not raw:
        _fail(src, where, "empty list: the grid would have no cells")
    return [_param(key, v, src, f"{where}[{i}]") for i, v in enumerate(raw)]


def _condition(raw: Any, src: str, where: str, keys: dict[str, str]) -> dict[str, list[Any]]:
    """`{key: value or [any of values]}` over the keys that fixed, grid and zip set."""
    raw = _mapping(raw, src, where, "parameter: value or [values]")
    if not raw:
        _fail(src, where, "empty condition (it would match every cell)")
    cond = {}
    for key, value in raw.items():
        if key not in keys:
            _fail(src, f"{where}.{key}", "can only test keys set by fixed, grid or zip", keys)
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
    description: str
    profile: str | None
    fixed: dict[str, Any]
    axes: dict[str, list[Any]]          # grid: key → values, in file order
    zips: list[dict[str, list[Any]]]    # each group's lists have one length
    exclude: list[dict[str, list[Any]]]
    overrides: list[Override]
    resources: dict[str, Any]           # the profile's, updated by the file's


@dataclass(frozen=True)
class Cell:
    id: str                             # sha256 of params + resources, 12 hex digits
    name: str                           # a label, e.g. sasrec-ml-1m-L64-s42; not unique
    params: dict[str, Any]              # every TrainConfig key the grid file sets, normalised
    resources: Resources

    def train_config(self, out: str, group: str) -> TrainConfig:
        """The trainer's config: the cell's params plus what the launcher sets."""
        return TrainConfig.from_dict({**self.params, "out": out, "run_id": self.id,
                                      "wandb_group": group}, f"cell {self.name} ({self.id})")


class _Loader(yaml.SafeLoader):
    """YAML without three traps: `4:00:00` stays a string (YAML 1.1: the integer 14400), `1e-3`
    is a float (YAML 1.1: a string), and a key repeated in a mapping is an error."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":      # `<<: *anchor` may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"duplicate key {key!r}",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag not in _NUMBER_TAGS]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(_NUMBER_TAGS[0], re.compile(
    r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"))
_Loader.add_implicit_resolver(_NUMBER_TAGS[1], re.compile(
    r"^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+"
    r"|[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def _read_yaml(path: Path, what: str) -> dict:
    try:
        with path.open() as stream:                 # (a stream, so that marks name the file)
            raw = yaml.load(stream, Loader=_Loader)
    except OSError as e:
        raise GridError(f"{path}: cannot read the {what}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise GridError(f"{path}: invalid YAML: {e}") from None
    return _mapping(raw, str(path), "top level", f"a {what}")


def _profile(name: Any, src: str, profiles_dir: Path) -> dict[str, Any]:
    available = sorted(p.stem for p in profiles_dir.glob("*.yaml"))
    file = profiles_dir / f"{name}.yaml"
    if not isinstance(name, str) or "/" in name or not file.is_file():
        _fail(src, "profile", f"no profile file {file}", available)
    raw = _read_yaml(file, "cluster profile")
    for key in raw:
        if key not in ("description", "resources"):
            _fail(str(file), str(key), "unknown key in a profile", ["description", "resources"])
    return _parse_resources(raw.get("resources", {}), str(file), "resources")


def _list(raw: dict, key: str, src: str, example: str) -> list:
    value = raw.get(key, [])
    if not isinstance(value, list):
        _fail(src, key, f"expected a list, e.g. {example}")
    return value


def load_grid(path: str | Path, profiles_dir: str | Path | None = None) -> Grid:
    """Read and check a grid file: everything that can be checked without expanding it."""
    path = Path(path)
    src = str(path)
    raw = _read_yaml(path, "grid file")
    for key in raw:
        if key not in TOP_KEYS:
            _fail(src, str(key), "unknown top-level key", TOP_KEYS)
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        _fail(src, "name", f"{name!r} should be letters, digits, '.', '_' or '-' (a folder name)")
    description = raw.get("description", "")
    if not isinstance(description, str):
        _fail(src, "description", "should be a string")

    fixed = _params(raw.get("fixed", {}), src, "fixed")
    origin = {k: f"fixed.{k}" for k in fixed}        # where each base key is set
    axes = {}
    for key, values in _mapping(raw.get("grid", {}), src, "grid", "parameter: [values]").items():
        if key in origin:
            _fail(src, f"grid.{key}", f"also set in {origin[key]}; a key is fixed or an axis")
        axes[key] = _values(key, values, src, f"grid.{key}")
        origin[key] = f"grid.{key}"
    zips = []
    for g, group in enumerate(_list(raw, "zip", src, "- {embedding_dim: [64, 128], "
                                                     "num_blocks: [1, 2]}")):
        where = f"zip[{g}]"
        if not _mapping(group, src, where, "parameter: [values], all of one length"):
            _fail(src, where, "empty group")
        for key in group:
            if key in origin:
                _fail(src, f"{where}.{key}", f"also set in {origin[key]}; a key is set once")
            origin[key] = f"{where}.{key}"
        lists = {key: _values(key, values, src, f"{where}.{key}") for key, values in group.items()}
        if len({len(v) for v in lists.values()}) > 1:
            _fail(src, where, "lists of unequal length: " + ", ".join(
                f"{k} has {len(v)}" for k, v in lists.items()))
        zips.append(lists)
    for key in ("model", "dataset"):
        if key not in origin:
            _fail(src, "fixed", f"{key} is not set; put it under fixed, grid or zip")

    exclude = [_condition(e, src, f"exclude[{i}]", origin)
               for i, e in enumerate(_list(raw, "exclude", src, "- {model: pop, seed: 123}"))]
    overrides = []
    for i, o in enumerate(_list(raw, "overrides", src, "- {when: {...}, set: {...}}")):
        where = f"overrides[{i}]"
        for key in _mapping(o, src, where, "when: {...}, set: {...}"):
            if key not in ("when", "set"):
                _fail(src, f"{where}.{key}", "unknown key in an override", ["when", "set"])
        when = _condition(o["when"], src, f"{where}.when", origin) if "when" in o else {}
        to_set = dict(_mapping(o.get("set"), src, f"{where}.set", "parameter: value"))
        if not to_set:
            _fail(src, f"{where}.set", "nothing to set")
        res = _parse_resources(to_set.pop("resources", {}), src, f"{where}.set.resources")
        overrides.append(Override(when, _params(to_set, src, f"{where}.set"), res))

    profiles = Path(profiles_dir) if profiles_dir is not None else PROFILES_DIR
    resources = _profile(raw["profile"], src, profiles) if "profile" in raw else {}
    resources = _merge_resources(resources, _parse_resources(raw.get("resources", {}), src,
                                                             "resources"))
    return Grid(path, name, description, raw.get("profile"), fixed, axes, zips, exclude,
                overrides, resources)


def _label(params: dict[str, Any], extra_keys: Iterable[str]) -> str:
    model, dataset, max_len, seed = (params.get(k, _DEFAULTS[k]) for k in LABEL_KEYS)
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
            _fail(src, f"exclude[{i}]", f"{json.dumps(cond, default=str)} matches no cell")
    bases = [p for p in bases if not any(_matches(c, p) for c in grid.exclude)]
    if not bases:
        _fail(src, "exclude", "every cell is excluded")

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
                merged = _merge_resources(merged, grid.overrides[i].resources)
            res = Resources(**copy.deepcopy(merged))
            resources_for[key] = (res, json.dumps(dataclasses.asdict(res), sort_keys=True))
        res, res_json = resources_for[key]
        name = _label(params, extra_keys)
        try:
            TrainConfig.from_dict(params, f"cell {name}")
        except (ConfigError, TypeError, ValueError) as e:
            raise GridError(f"{src}: {e}") from None
        # = json.dumps({"params": params, "resources": ...}, sort_keys=True), built faster
        blob = (f'{{"params": {json.dumps(params, sort_keys=True, default=str)}, '
                f'"resources": {res_json}}}')
        cell = Cell(hashlib.sha256(blob.encode()).hexdigest()[:12], name, params, res)
        if cell.id in by_id:
            first, first_base = by_id[cell.id]
            diff = ", ".join(f"{k}={first_base[k]} vs {base[k]}" for k in base
                             if first_base[k] != base[k])
            _fail(src, "cells", f"{first.name} and {cell.name} resolve to the same parameters "
                  f"and resources (id {cell.id}): " + (
                      f"overrides make {diff} equal" if diff else
                      "a value is repeated in a grid or zip list"))
        by_id[cell.id] = (cell, base)
        cells.append(cell)
    for i, n in enumerate(hits):
        if not n:
            _fail(src, f"overrides[{i}].when", f"{json.dumps(grid.overrides[i].when, default=str)}"
                  " matches no cell (exclude is applied first)")
    return cells


def load_cells(path: str | Path, profiles_dir: str | Path | None = None) -> list[Cell]:
    """`expand(load_grid(path))`."""
    return expand(load_grid(path, profiles_dir))
