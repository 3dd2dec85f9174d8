"""The sweep directory: everything a sweep knows, on disk, written atomically.

    SWEEP/
      grid.yaml            the grid file as given
      manifest.json        sweep name, executor, code version, every cell (id, params, resources)
      submissions.jsonl    one line per submission of a cell: executor, job id, time
      cells/<id>/          a cell's run: cell.json (written here), then the trainer's files
      slurm/               submitit's pickles and logs (%A_%a_0_log.out/.err)
      workers/             local: each persistent worker's own log (outside its cells)
      sbatch/              dry-run: the exact sbatch scripts that would be submitted
      aggregate/           `aggregate`'s tables and plots (default output)
      .aggregate-cache/    rows `aggregate` has read, by file size and mtime (safe to delete)
      .lock                held by commands that submit (sweep, resume), so two never overlap
      tune.journal         a search's trials (launcher/tune.py; its manifest has a `tune` key,
      .tune.lock           and its cells are added wave by wave), held by the running tuner

Status, resume and aggregate read only this directory (and sacct), never the grid file again.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

from launcher.grid import Cell, Resources, make_cell
from recsys_core.atomic import atomic_write_text

MANIFEST = "manifest.json"
CELL_FILE = "cell.json"
SUBMISSIONS = "submissions.jsonl"


def code_version() -> dict:
    """git SHA and dirty flag of the code that runs (the checkout the launcher lives in)."""
    repo = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=repo, capture_output=True, text=True, timeout=10,
                                    check=True).stdout.strip())
        return {"git_sha": sha, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"git_sha": None, "dirty": None}


def write_cell_file(folder: Path, cell: Cell) -> None:
    """cell.json: what the job callable reads. `config` is the cell's TrainConfig as the grid
    built it (less `out`: the job trains in the folder cell.json is in); `params`, what the
    grid file set, is for people."""
    text = json.dumps({"id": cell.id, "name": cell.name, "sweep": cell.config.wandb_group,
                       "params": cell.params, "debug_hooks": cell.hooks,
                       "config": cell.config.model_dump(exclude={"out"})},
                      indent=1, sort_keys=True) + "\n"
    atomic_write_text(Path(folder) / CELL_FILE, text)


def cell_records(cells: list[Cell]) -> list[dict]:
    """Cells as plain dicts (manifest, --json). Cells share Resources objects: convert each once."""
    resources: dict[int, dict] = {}
    for c in cells:
        if id(c.resources) not in resources:
            resources[id(c.resources)] = asdict(c.resources)
    return [{"id": c.id, "name": c.name, "params": c.params,
             "resources": resources[id(c.resources)]} for c in cells]


def _some(names: list[str], shown: int = 3) -> str:
    if not names:
        return "no cell"
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{len(names)} cell(s) ({', '.join(names[:shown])}{more})"


class Sweep:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def cell_dir(self, cell_id: str) -> Path:
        return self.root / "cells" / cell_id

    # --- creation ------------------------------------------------------------------------------

    @classmethod
    def create(cls, root: Path, grid_file: Path, name: str, cells: list[Cell],
               executor: str, write_cells: bool = True, extend: bool = False,
               extra: dict | None = None) -> "Sweep":
        """Write the manifest (with `extra`'s keys), the grid copy and every cell's cell.json.
        An existing sweep directory is reused only if it holds exactly the same cells (so
        `sweep` twice is safe), or, with `extend`, if it is a sweep of the same grid name: the
        cells it lacks are added and the ones it has are left as they are (a study grown a
        slice at a time)."""
        sweep = cls(root)
        manifest = {
            **(extra or {}),
            "name": name,
            "executor": executor,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "grid_file": str(Path(grid_file).resolve()),
            "code": code_version(),
            "cells": cell_records(cells),
        }
        if sweep.manifest_path.exists():
            old = sweep.manifest()
            old_ids = {c["id"] for c in old["cells"]}
            new_ids = {c.id for c in cells}
            if extend:
                manifest["cells"] = old["cells"] + cell_records(
                    [c for c in cells if c.id not in old_ids])
            elif old_ids != new_ids:
                added = [c.name for c in cells if c.id not in old_ids]
                removed = [c["name"] for c in old["cells"] if c["id"] not in new_ids]
                raise FileExistsError(
                    f"{sweep.root} holds another sweep ({len(old['cells'])} cells of "
                    f"'{old['name']}'): this grid adds {_some(added)} and removes "
                    f"{_some(removed)}; choose another --out, `resume` it, or add cells with --extend")
            else:   # the same cells (e.g. the grid's keys reordered): the sweep as first written
                manifest["cells"] = old["cells"]
            manifest["created_at"] = old["created_at"]
        copy = sweep.root / "grid.yaml"
        if not sweep.manifest_path.exists() and copy.is_file() and \
                copy.read_bytes() != Path(grid_file).read_bytes():
            raise FileExistsError(f"{sweep.root} is no sweep (no manifest.json) and holds a "
                                  f"grid.yaml other than {grid_file}, which the sweep's copy of "
                                  "its grid would replace; choose another --out")
        sweep.root.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(grid_file, sweep.root / ".grid.yaml.tmp")
        os.replace(sweep.root / ".grid.yaml.tmp", sweep.root / "grid.yaml")
        for c in cells if write_cells else ():
            sweep.write_cell(c)
        # Compact JSON: the C encoder writes a 10,000-cell manifest in milliseconds.
        atomic_write_text(sweep.manifest_path, json.dumps(manifest) + "\n")
        return sweep

    def write_cell(self, cell: Cell) -> None:
        write_cell_file(self.cell_dir(cell.id), cell)

    def add_cells(self, cells: list[Cell]) -> None:
        """Write these cells' cell.json and add those it lacks to the manifest (a search adds
        its trials wave by wave)."""
        known = set(self.cell_ids())
        for c in cells:
            self.write_cell(c)
        self.update_manifest(cells=self.manifest()["cells"] + cell_records(
            [c for c in cells if c.id not in known]))

    def update_manifest(self, **keys) -> None:
        atomic_write_text(self.manifest_path, json.dumps({**self.manifest(), **keys}) + "\n")

    # --- reading -------------------------------------------------------------------------------

    def manifest(self) -> dict:
        try:
            return json.loads(self.manifest_path.read_text())
        except (FileNotFoundError, NotADirectoryError):    # the latter: a file given as the sweep
            raise FileNotFoundError(f"{self.root}: not a sweep directory (no {MANIFEST})") from None
        except OSError as e:                                  # a folder, or no permission
            raise ValueError(f"{self.manifest_path}: cannot read the manifest: {e.strerror}") from e
        except json.JSONDecodeError as e:
            raise ValueError(f"{self.manifest_path}: unreadable manifest: {e}") from e

    def cell_ids(self) -> list[str]:
        return [c["id"] for c in self.manifest()["cells"]]

    def cells(self) -> list[Cell]:
        """The manifest's cells, each with its TrainConfig (built from its parameters)."""
        manifest = self.manifest()
        return [make_cell(c["id"], c["name"], c["params"], Resources(**c["resources"]),
                          manifest["name"], f"{self.manifest_path}: cell {c['name']}")
                for c in manifest["cells"]]

    # --- submissions ---------------------------------------------------------------------------

    def record_submissions(self, entries: list[dict]) -> None:
        """Append submissions in one write (O_APPEND: lines never interleave)."""
        if not entries:
            return
        text = "".join(json.dumps({"time": time.time(), **e}, sort_keys=True) + "\n"
                       for e in entries)
        fd = os.open(self.root / SUBMISSIONS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def submissions(self) -> list[dict]:
        """Every submission, oldest first. A torn last line (crash mid-write) is skipped."""
        path = self.root / SUBMISSIONS
        if not path.exists():
            return []
        entries = []
        for line in path.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return entries

    def latest_submissions(self) -> dict[str, dict]:
        """cell id → its most recent submission."""
        return {entry["cell"]: entry for entry in self.submissions()}

    @contextlib.contextmanager
    def lock(self):
        """Exclusive lock for commands that submit: a second one waits, then sees the first's
        submissions and does not submit the same cells again."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
