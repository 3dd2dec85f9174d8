"""`sweep GRID --reuse OTHER_SWEEP`: a cell that another sweep has already COMPLETED with the
same configuration is not trained again; its result files are copied in.

Grids of one study overlap: the embedding × blocks grid and the long-history grid each contain
the main grid's ML-1M cells at their default setting. Two cells are the same experiment when
their TrainConfigs are equal (all but what names the sweep: run id and W&B group; a field the
trainer gained after the other run counts at its default). A cell of the same id (a hash of
parameters and resources, grid.cell_id) whose configuration differs is reported, not reused.
The copied cell keeps its own result.json (its run's code version, host and times) and gets
`reused.json` naming the folder it came from. Checkpoints are not copied: a reused cell is
done, and `resume` leaves it alone.
"""
from __future__ import annotations

import json
import shutil
from functools import lru_cache
from pathlib import Path

from jobs.pack import completed
from launcher.grid import Cell
from launcher.sweep import Sweep
from recsys_core.atomic import atomic_write_text
from recsys_core.train.config import defaults

COPIED = ("result.json", "history.parquet", "predictions.txt")
REUSED = "reused.json"
# What a cell's TrainConfig takes from its sweep, not from the experiment.
SWEEP_OWNED = {"run_id", "wandb_group"}


class ReuseError(ValueError):
    """A --reuse folder that is not a sweep (the CLI's exit 2)."""


@lru_cache(maxsize=1)
def _defaults() -> dict:
    return json.loads(json.dumps(defaults()))


def _config(cell_json: Path) -> dict | None:
    """A cell's TrainConfig as written, less what its sweep owns; a field the trainer gained
    since (absent there) counts at its default, the behaviour the run had."""
    try:
        config = json.loads(cell_json.read_text())["config"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None
    added = {k: v for k, v in _defaults().items() if k not in config}
    return {k: v for k, v in {**config, **added}.items() if k not in SWEEP_OWNED | {"out"}}


def reuse_sources(others: list[str]) -> list[Path]:
    """The --reuse folders, each checked to be a sweep (ReuseError naming the first that is not)."""
    for other in others:
        if not (Path(other) / "manifest.json").exists():
            raise ReuseError(f"--reuse {other}: not a sweep directory (no manifest.json)")
    return [Path(o) for o in others]


def _key(config: dict) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def completed_configs(sources: list[Path]) -> dict[str, Path]:
    """The COMPLETED cells of the source sweeps by configuration (the first sweep's first)."""
    index: dict[str, Path] = {}
    for source in sources:
        for cell_dir in sorted((source / "cells").glob("*/")):
            config = _config(cell_dir / "cell.json") if completed(cell_dir) else None
            if config is not None:
                index.setdefault(_key(config), cell_dir)
    return index


def reuse_completed(sweep: Sweep, cells: list[Cell], others: list[Path]
                    ) -> tuple[list[Cell], list[str]]:
    """Copy into `sweep` the results of the cells that a sweep of `others` COMPLETED with the
    same configuration. Returns (the cells still to run: neither completed in `sweep` already
    nor reused; one line per reused source and per cell of the same id whose configuration
    differed)."""
    sources = [o for o in others if o.resolve() != sweep.root.resolve()]
    index = completed_configs(sources)
    todo, notes, counts = [], [], {str(s): 0 for s in sources}
    for cell in cells:
        target = sweep.cell_dir(cell.id)
        if completed(target):          # reused before, or run in this sweep already
            continue
        mine = {k: v for k, v in json.loads(json.dumps(cell.config.model_dump(exclude={"out"})))
                .items() if k not in SWEEP_OWNED}
        # By configuration, not id: a cell id also hashes the resources, whose fields have
        # grown since the study's first sweeps (an older cell's id differs for the same run).
        source = index.get(_key(mine))
        if source is None:
            same_id = next((s / "cells" / cell.id for s in sources
                            if completed(s / "cells" / cell.id)), None)
            if same_id is not None:
                theirs = _config(same_id / "cell.json") or {}
                differ = sorted(k for k in {*mine, *theirs} if mine.get(k) != theirs.get(k))
                notes.append(f"{cell.name}: not reused from {same_id} (its configuration "
                             f"differs: {', '.join(differ) or 'unreadable cell.json'})")
            todo.append(cell)
            continue
        target.mkdir(parents=True, exist_ok=True)
        for name in COPIED:
            if (source / name).exists():
                shutil.copy2(source / name, target / name)
        atomic_write_text(target / REUSED, json.dumps({"from": str(source.resolve())}) + "\n")
        counts[str(source.parent.parent)] += 1
    notes += [f"--reuse: {n} completed cell(s) copied from {s}" for s, n in counts.items()]
    return todo, notes
