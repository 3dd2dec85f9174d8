"""Bring a device call's study sweep back into the repository's (issue 16).

Each call of `jobs/study_call.sh` starts from a copy of one sweep and returns its own copy: some
cells COMPLETED, some stopped with their epoch checkpoints. Several calls can start from the same
sweep, so this merges any number of them:

    python -m jobs.study_merge CALL_SWEEP... --into results/study/sweep --state .study/study

- `--into` (committed) gets each COMPLETED cell's result files (cell.json, result.json,
  history.parquet, predictions.txt), the longest manifest (a call may have added cells), and the
  union of the submissions in time order. A cell COMPLETED there already is left as it is.
- `--state` (on this machine, carried to the next call) becomes a copy of `--into` plus the
  checkpoints of the cells that did not finish, so the next `resume` carries on from their last
  epoch instead of starting over; the newest checkpoint of a cell wins when calls overlap.
  `--state-max-mb` keeps the carried copy within the device's 64 MiB (with .whl and the data):
  the checkpoints that save the most training seconds per byte go first.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from jobs.pack import completed
from jobs.resume_pick import CHECKPOINTS, pick, size
from launcher.sweep import Sweep
from recsys_core.atomic import atomic_write_text

RESULT_FILES = ("cell.json", "result.json", "history.parquet", "predictions.txt")


def manifest(sweep: Path) -> dict:
    """The sweep's manifest, as the launcher reads it (launcher.sweep.Sweep.manifest), or
    SystemExit with its one line: not a sweep, or a manifest that cannot be read."""
    try:
        return Sweep(sweep).manifest()
    except (OSError, ValueError) as e:
        raise SystemExit(str(e)) from None


def merge(calls: list[Path], into: Path) -> dict[str, int]:
    """Copy the calls' COMPLETED cells, manifest and submissions into `into`."""
    base = manifest(into)
    cells = {c["id"]: c for c in base["cells"]}
    added = 0
    for call in calls:
        m = manifest(call)
        if m["name"] != base["name"]:
            raise SystemExit(f"{call}/manifest.json: sweep '{m['name']}', "
                             f"not {into}'s '{base['name']}'")
        for c in m["cells"]:
            if c["id"] not in cells:
                cells[c["id"]] = c
                base["cells"].append(c)
                added += 1
    copied = 0
    for call in calls:
        for cell_dir in sorted((call / "cells").iterdir()):
            target = into / "cells" / cell_dir.name
            if not completed(cell_dir) or completed(target):
                continue
            target.mkdir(parents=True, exist_ok=True)
            for name in RESULT_FILES:
                if (cell_dir / name).exists():
                    shutil.copy2(cell_dir / name, target / name)
            copied += 1
    for cell_id, c in cells.items():   # a cell added by a call but never finished: its cell.json
        src = next((call / "cells" / cell_id / "cell.json" for call in calls
                    if (call / "cells" / cell_id / "cell.json").exists()), None)
        target = into / "cells" / cell_id / "cell.json"
        if src and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    # A completed result is final: a later call that ran the cell again from a stale copy (and
    # did not finish it) must not make `status` see the result as older than its submission.
    finished_at = {d.name: (d / "result.json").stat().st_mtime
                   for d in (into / "cells").iterdir() if completed(d)}
    entries = {}
    for sweep in [into, *calls]:
        path = sweep / "submissions.jsonl"
        for line in path.read_text().splitlines() if path.exists() else ():
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue    # a torn last line
            if e.get("time", 0.0) <= finished_at.get(e.get("cell"), float("inf")):
                entries[line] = e.get("time", 0.0)
    atomic_write_text(into / "submissions.jsonl",
                      "".join(line + "\n" for line in sorted(entries, key=entries.get)))
    atomic_write_text(into / "manifest.json", json.dumps(base) + "\n")
    return {"cells_added": added, "completed_copied": copied}


def make_state(calls: list[Path], into: Path, state: Path,
               max_mb: float | None = None) -> tuple[int, list[str]]:
    """`state` = `into` + the checkpoints of its unfinished cells (the newest of the calls' and
    of the state's own, so a merge of later calls keeps what an earlier merge carried).
    With `max_mb`, only as many as fit (a device call carries 64 MiB in all): those that save
    the most training seconds per byte first. Returns (cells with checkpoints, cells left out)."""
    old = state.with_name(state.name + ".old")
    if old.exists():
        raise SystemExit(f"{old}: left by a merge that did not finish (it may hold the only "
                         f"copy of some checkpoints): pass it as a call, or move it away")
    if state.exists():
        state.rename(old)
        calls = [*calls, old]
    shutil.copytree(into, state)
    result = _add_checkpoints(calls, state, max_mb)
    if old.exists():
        shutil.rmtree(old)
    return result


def _add_checkpoints(calls: list[Path], state: Path, max_mb: float | None
                     ) -> tuple[int, list[str]]:
    newest: dict[Path, dict] = {}         # each unfinished cell's newest checkpoint folder
    for cell in manifest(state)["cells"]:     # a dry-run sweep's cells may have no folder yet
        if completed(state / "cells" / cell["id"]):
            continue
        found = [call / "cells" / cell["id"] for call in calls
                 if (call / "cells" / cell["id"] / "checkpoint.pt").exists()]
        if found:
            newest[max(found, key=lambda d: (d / "checkpoint.pt").stat().st_mtime)] = cell
    chosen, left_out = pick(list(newest), float("inf") if max_mb is None else max_mb * 1e6)
    for source in chosen:
        cell_dir = state / "cells" / newest[source]["id"]
        cell_dir.mkdir(parents=True, exist_ok=True)
        for name in CHECKPOINTS:
            if (source / name).exists():
                shutil.copy2(source / name, cell_dir / name)
    return len(chosen), [f"{newest[d]['name']} ({size(d) / 1e6:.1f} MB)" for d in left_out]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.study_merge",
                                description=__doc__.split("\n")[0])
    p.add_argument("calls", nargs="+", type=Path, help="the sweeps the device calls brought back")
    p.add_argument("--into", type=Path, required=True, help="the committed sweep to merge into")
    p.add_argument("--state", type=Path, help="write the sweep to carry to the next call here")
    p.add_argument("--state-max-mb", type=float, help="checkpoints in --state up to this many "
                   "MB, the most training seconds per byte first (default: all)")
    args = p.parse_args(argv)
    counts = merge(args.calls, args.into)
    print(f"{args.into}: {counts['completed_copied']} cell(s) COMPLETED copied, "
          f"{counts['cells_added']} added to the manifest")
    if args.state:
        n, left_out = make_state(args.calls, args.into, args.state, args.state_max_mb)
        print(f"{args.state}: {n} unfinished cell(s) carry their checkpoints"
              + (f"; left out (past --state-max-mb): {', '.join(left_out)}" if left_out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
