"""What grid files and cluster profiles (slurm/profiles/) share: reading their YAML, errors
that name the file and the field, and a cell's SLURM resources (validated values that are safe
on an #SBATCH line)."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, NoReturn

import yaml

PROFILES_DIR = Path(__file__).resolve().parents[1] / "slurm" / "profiles"
TIME_FORMATS = "MINUTES, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS"


class GridError(ValueError):
    """A grid file is wrong; the message names the file, the field and the valid choices."""


def fail(src: str, where: str, problem: str, valid: Iterable[Any] | None = None) -> NoReturn:
    valid_text = f"; valid: {', '.join(map(str, valid))}" if valid is not None else ""
    raise GridError(f"{src}: {where}: {problem}{valid_text}")


def mapping(raw: Any, src: str, where: str, what: str) -> dict:
    if not isinstance(raw, dict):
        fail(src, where, f"expected a mapping ({what}), got {type(raw).__name__}")
    return raw


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
    cells_per_job: int = 1          # SLURM: cells run one after another in one job (jobs/pack.py)

    @property
    def time_minutes(self) -> int | None:
        return None if self.time is None else _time_minutes(self.time)

    def identity(self) -> dict[str, Any]:
        """What a cell's id hashes: how cells are packed into jobs is not part of it."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in NOT_IDENTITY}


RESOURCE_KEYS = tuple(f.name for f in dataclasses.fields(Resources))
NOT_IDENTITY = ("cells_per_job",)


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


def check_resource(key: str, value: Any, src: str, where: str) -> Any:
    if isinstance(value, bool) and key != "slurm_extra":
        fail(src, where, f"{value!r} is not a valid {key}")
    if key in ("gpus", "cpus", "nodes", "cells_per_job"):
        low = 0 if key == "gpus" else 1
        if not isinstance(value, int) or value < low:
            fail(src, where, f"{value!r} should be an integer >= {low}")
    elif key == "mem":
        value = str(value).upper() if isinstance(value, (int, str)) else ""
        if not re.fullmatch(r"[1-9]\d*[KMGT]?", value):
            fail(src, where, f"{value!r} is not a memory size", ["64G", "500M", "64000 (MB)"])
    elif key == "time":
        value = str(value) if isinstance(value, (int, str)) else ""
        if _time_minutes(value) is None:
            fail(src, where, f"{value!r} is not a positive SLURM time", [TIME_FORMATS])
    elif key == "slurm_extra":
        for k, v in mapping(value, src, where, "sbatch option: value, e.g. mail-type: END"
                             ).items():
            if not isinstance(k, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", k):
                fail(src, f"{where}.{k}", "should be an sbatch option without leading dashes")
            if not isinstance(v, (str, int, float, bool)):
                fail(src, f"{where}.{k}", f"{v!r} should be a string, number or boolean")
        value = dict(value)
    elif not isinstance(value, str) or not value.strip():  # partition, account, qos, constraint
        fail(src, where, f"{value!r} should be a non-empty string")
    # Resource values become #SBATCH lines: a newline would start a line of shell script.
    for v in (value.values() if isinstance(value, dict) else [value]):
        if isinstance(v, str) and re.search(r"[\x00-\x1f\x7f]", v):
            fail(src, where, f"{v!r} contains a newline or control character")
    return value


def parse_resources(raw: Any, src: str, where: str) -> dict[str, Any]:
    out = {}
    for key, value in mapping(raw, src, where, "resource: value").items():
        if key not in RESOURCE_KEYS:
            fail(src, f"{where}.{key}", "unknown resource", RESOURCE_KEYS)
        out[key] = check_resource(key, value, src, f"{where}.{key}")
    return out


def merge_resources(base: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    extra = {**base.get("slurm_extra", {}), **more.get("slurm_extra", {})}
    return {**base, **more, **({"slurm_extra": extra} if extra else {})}


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


def read_scalar(text: str) -> Any:
    """A value typed on a command line (`--where lr=1e-3`), read as a grid file's would be."""
    return yaml.load(text, Loader=_Loader)


def read_yaml(path: Path, what: str) -> dict:
    try:
        with path.open() as stream:                 # (a stream, so that marks name the file)
            raw = yaml.load(stream, Loader=_Loader)
    except OSError as e:
        raise GridError(f"{path}: cannot read the {what}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise GridError(f"{path}: invalid YAML: {e}") from None
    except UnicodeDecodeError as e:          # a binary file, or text in another encoding
        raise GridError(f"{path}: not a YAML text file (byte {e.start} is not UTF-8)") from None
    return mapping(raw, str(path), "top level", f"a {what}")


def load_profile(name: Any, src: str, profiles_dir: Path) -> dict[str, Any]:
    available = sorted(p.stem for p in profiles_dir.glob("*.yaml"))
    file = profiles_dir / f"{name}.yaml"
    if not isinstance(name, str) or "/" in name or not file.is_file():
        fail(src, "profile", f"no profile file {file}", available)
    raw = read_yaml(file, "cluster profile")
    for key in raw:
        if key not in ("description", "resources"):
            fail(str(file), str(key), "unknown key in a profile", ["description", "resources"])
    return parse_resources(raw.get("resources", {}), str(file), "resources")
