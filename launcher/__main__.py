"""`python -m launcher {sweep,status,resume,cancel,aggregate,tune}`: the product's front door.

    sweep GRID [--executor slurm|local|dry-run] [--out DIR] [--json] [--workers N]
               [--where KEY=VALUE[,VALUE...]] [--cells-per-gpu K] [--process-per-cell]
               [--cells-per-job K] [--mps] [--order longest-first|grid] [--gpu-memory-gb GB]
               [--extend] [--reuse SWEEP ...]
    status SWEEP [--json] [--watch [SECONDS]]
    resume SWEEP [--executor slurm|local] [--workers N] [--cells-per-gpu K]
                 [--process-per-cell] [--cells-per-job K] [--mps] [--order longest-first|grid]
                 [--gpu-memory-gb GB] [--where KEY=VALUE[,VALUE...]]
    cancel SWEEP [--cells ID ...]
    aggregate SWEEP [SWEEP ...] [--out DIR] [--where KEY=V,...] [--no-plots] [--versus MODEL ...]
    tune GRID [--executor slurm|local|dry-run] [--trials N] [--parallel P] [--out DIR]
              [--emit-grid FILE] [--json] [--cells-per-gpu K]
    tune status DIR [--json]
Exit codes: 0 ok, 1 some cell failed (local runs), 2 bad input or SLURM refused (one line on
stderr, nothing written) or --mps's MPS daemon did not come up (no cell started), 130
interrupted (Ctrl-C: `resume` runs what did not finish).
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import time
from pathlib import Path

from recsys_core.bytecode import LAUNCHER_CACHE, bytecode_cache

bytecode_cache(LAUNCHER_CACHE, children=False)   # before the imports below: compiled once
if __name__ == "__main__":
    from launcher import spare_worker
    spare_worker.start(sys.argv[1:])     # its imports while ours, the grid's and the plan's run

from launcher import executors  # noqa: E402
from launcher.executors.base import options_from, running_flags  # noqa: E402
from launcher.grid import GridError, absent_values, load_grid, expand, select  # noqa: E402
from launcher.status import watch_seconds  # noqa: E402
from launcher.sweep import Sweep  # noqa: E402
from recsys_core.cli import INTERRUPTED, ArgumentParser, guarded  # noqa: E402
from recsys_core.train.config import ConfigError  # noqa: E402

SHIPPED_GRIDS = Path(__file__).parent / "grids"


def grid_path(arg: str) -> Path:
    """A grid file, or the name of one shipped in launcher/grids (quickstart, paper)."""
    path = Path(arg)
    if not path.exists() and (SHIPPED_GRIDS / f"{arg}.yaml").exists():
        return SHIPPED_GRIDS / f"{arg}.yaml"
    return path


def _err(msg: str, code: int = 2) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return code


def _submit(sweep: Sweep, executor: executors.Executor, cells, new_folder: bool) -> None:
    """executor.submit under the sweep's lock; a refused first submission leaves no folder."""
    try:
        executor.submit(sweep, cells)
    except executors.ExecutorError:
        if new_folder and not sweep.latest_submissions():
            shutil.rmtree(sweep.root, ignore_errors=True)   # ours, and nothing ran
        raise


def _not_submitted(sweep: Sweep, name: str, cells):
    """--extend: the cells `sweep` has not submitted before (a cell a dry-run only listed is
    submitted now; `resume` reruns the unfinished ones). ValueError for another grid's sweep."""
    old = sweep.manifest()["name"]
    if old != name:
        raise ValueError(f"--extend: {sweep.root} holds a sweep of grid '{old}', not "
                         f"'{name}': --extend adds cells of the same grid only")
    from jobs.pack import completed
    done = set(sweep.latest_submissions()) | {c.id for c in cells if completed(sweep.cell_dir(c.id))}
    kept = sum(c.id in done for c in cells)
    todo = [c for c in cells if c.id not in done]
    print(f"--extend: {sweep.root} has all {kept} cell(s) already (`resume` runs unfinished ones)"
          if not todo else f"--extend: {len(todo)} cell(s) added to {sweep.root}, {kept} already "
          "there left as they are (`resume` runs unfinished ones)")
    return todo


def cmd_sweep(args) -> int:
    try:
        grid = load_grid(grid_path(args.grid))
        cells = select(expand(grid), args.where, str(grid.path))
    except (GridError, OSError, ValueError) as e:
        return _err(str(e))
    if grid.search is not None:
        print(f"note: {grid.path} has a search block; `sweep` runs its cells as they are, "
              "`tune` searches", file=sys.stderr)
    out = Path(args.out) if args.out else Path("sweeps") / grid.name
    if out.exists() and not out.is_dir():
        return _err(f"--out {out}: a file, not a sweep folder")
    from launcher.reuse import reuse_completed, reuse_sources
    try:
        reuse = reuse_sources(args.reuse)
    except ValueError as e:
        return _err(str(e))
    executor = executors.get(args.executor, options_from(args))
    reason = executor.unavailable_reason()
    if reason:
        return _err(f"{reason}; `sweep` submits to SLURM by default: run the cells on this "
                    "machine with --executor local, or write the sbatch scripts with "
                    "--executor dry-run")
    new_folder = not out.exists()
    try:
        with Sweep(out).lock():     # two `--extend` calls at once must not submit a cell twice
            if args.extend and not new_folder and (out / "manifest.json").exists():
                cells = _not_submitted(Sweep(out), grid.name, cells)
                if not cells:
                    return 0
            executor.preview(cells)
            sweep = Sweep.create(out, grid.path, grid.name, cells, executor.name,
                                 write_cells=executor.records_submissions, extend=args.extend)
            if executor.records_submissions and sweep.latest_submissions() and not args.extend:
                return _err(f"{out} was submitted before; use `python -m launcher resume {out}`")
            if reuse:
                cells, notes = reuse_completed(sweep, cells, reuse)
                print("\n".join(notes))
                if not cells:
                    return 0
            _submit(sweep, executor, cells, new_folder)
    except (FileExistsError, ValueError, executors.ExecutorError) as e:
        return _err(str(e))
    return executor.wait(sweep, cells)


def cmd_status(args) -> int:
    from launcher.status import cell_states, render
    sweep = Sweep(args.sweep)
    try:
        sweep.manifest()
    except (FileNotFoundError, ValueError) as e:
        return _err(str(e))
    reported: set[str] = set()
    while True:
        try:
            rows = cell_states(sweep)
        except executors.ExecutorError as e:
            return _err(f"{e} (the result files alone: python -m launcher aggregate {sweep.root})")
        if args.json:
            print(json.dumps(rows))
        elif args.watch is None:
            print(render(rows))
        else:
            for r in rows:   # failures as they happen
                if r["state"] in ("FAILED", "TIMEOUT", "CANCELLED", "PREEMPTED") and \
                        r["id"] not in reported:
                    reported.add(r["id"])
                    print(f"{time.strftime('%H:%M:%S')} {r['id']} {r['name']} {r['state']}: "
                          f"{(r['reason'] or '').splitlines()[-1:] }", flush=True)
            print(render(rows).splitlines()[-1], flush=True)
        if args.watch is None or all(r["state"] not in executors.ACTIVE for r in rows):
            return 0
        time.sleep(args.watch)


def cmd_resume(args) -> int:
    from launcher.status import RESUBMIT, cell_states
    sweep = Sweep(args.sweep)
    try:
        manifest = sweep.manifest()
    except (FileNotFoundError, ValueError) as e:
        return _err(str(e))
    name = args.executor or manifest["executor"]
    if name not in executors.names(resumable=True):
        return _err(f"{sweep.root} was a {name} sweep: pass --executor "
                    + " or ".join(executors.names(resumable=True)))
    executor = executors.get(name, options_from(args))
    reason = executor.unavailable_reason()
    if reason:
        return _err(f"{reason}; resume this sweep here with --executor local")
    try:
        with sweep.lock():   # a second resume waits here, then finds these cells PENDING
            rows = {r["id"]: r for r in cell_states(sweep)}
            todo = [c for c in sweep.cells() if rows[c.id]["state"] in RESUBMIT]
            if args.where:   # a slice: checked against every cell (a typo is an error), and
                # a slice whose cells have all finished has nothing to resume
                chosen = {c.id for c in select(sweep.cells(), args.where, str(sweep.root),
                                               strict=False)}
                print("".join(f"note: {line}\n" for line in
                              absent_values(sweep.cells(), args.where, str(sweep.root))), end="")
                todo = [c for c in todo if c.id in chosen]
            if not todo:
                of_slice = " of the --where slice" if args.where else ""
                print(f"nothing to resume: every cell{of_slice} is completed, queued or running")
                return 0
            for c in todo:   # from the manifest: a dry-run sweep's cells have none yet
                sweep.write_cell(c)
            print(f"resuming {len(todo)} cell(s): " + ", ".join(
                f"{c.id} ({rows[c.id]['state']})" for c in todo))
            executor.submit(sweep, todo)
    except (executors.ExecutorError, GridError, ConfigError) as e:   # a manifest edited by hand
        return _err(str(e))
    return executor.wait(sweep, todo)


def cmd_cancel(args) -> int:
    sweep = Sweep(args.sweep)
    try:
        cells = set(sweep.cell_ids())    # ids alone: no config to build per cell
    except (FileNotFoundError, ValueError) as e:
        return _err(str(e))
    wanted = set(args.cells or cells)
    unknown = sorted(wanted - cells)
    if unknown:
        return _err(f"unknown cell id(s) {', '.join(unknown)} in {sweep.root}")
    latest = sweep.latest_submissions()
    stopped = []
    for name, cls in executors.REGISTRY.items():
        if cls.cancels is None:
            continue
        subs = {c: latest[c] for c in sorted(wanted) if latest.get(c, {}).get("executor") == name}
        try:
            stopped.append(f"{executors.get(name).cancel(sweep, subs)} {cls.cancels}")
        except executors.ExecutorError as e:
            return _err(str(e))
    print("cancelled " + ", ".join(stopped))
    return 0


def cmd_aggregate(args) -> int:
    from launcher.aggregate import run_cli
    return run_cli(args)


def cmd_tune(args) -> int:
    from launcher import tune, tune_report
    if args.target[0] == "status":
        if len(args.target) != 2:
            return _err("usage: python -m launcher tune status DIR [--json]")
        try:
            rep = tune_report.report(Sweep(args.target[1]))
        except (FileNotFoundError, ValueError) as e:
            return _err(str(e))
        print(json.dumps(rep) if args.json else tune_report.render(rep))
        return 0
    if len(args.target) != 1:
        return _err(f"tune takes one grid file, got {' '.join(args.target)} "
                    "(or: tune status DIR)")
    try:
        grid = load_grid(grid_path(args.target[0]))
        if grid.search is None:
            raise GridError(f"{grid.path}: search: the grid has no search block; `tune` needs "
                            "one (launcher/search.py), `sweep` runs a grid as it is")
        bases = tune.bases(grid, expand(grid))
        if args.emit_grid:
            tune_report.check_emit_path(Path(args.emit_grid), grid)
    except (GridError, OSError, ValueError) as e:
        return _err(str(e))
    trials, parallel = args.trials or grid.search.trials, args.parallel or grid.search.parallel
    if min(trials, parallel) < 1:
        return _err(f"--trials {trials} --parallel {parallel}: both must be at least 1")
    out = Path(args.out) if args.out else Path("sweeps") / grid.name
    if out.exists() and not out.is_dir():
        return _err(f"--out {out}: a file, not a sweep folder")
    executor = executors.get(args.executor, executors.Options(
        workers=parallel, cells_per_gpu=args.cells_per_gpu, mps=args.mps, json=args.json))
    reason = executor.unavailable_reason()
    if reason:
        return _err(f"{reason}; `tune` submits to SLURM by default: run the trials on this "
                    "machine with --executor local, or see the first wave with --executor dry-run")
    try:
        if not executor.records_submissions:
            tune.dry_run(grid, out, executor, trials, parallel)
            return 0
        # SIGTERM (timeout, a batch system, kill) stops the tuner as Ctrl-C does: the local
        # executor's running trials stop and keep their checkpoints, the same command goes on
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        sweep, code = tune.run_search(grid, out, executor, trials, parallel)
        rep = tune_report.report(sweep)
        if code == 0 and args.emit_grid:
            path = tune_report.emit_grid(grid, bases, sweep, Path(args.emit_grid))
            print(f"the best parameters: {path} (python -m launcher sweep {path})")
    except (tune.TuneError, executors.ExecutorError, FileExistsError, ValueError) as e:
        return _err(str(e))
    print(tune_report.render(rep))
    if code == INTERRUPTED:
        print(f"the same `tune` command on {out} continues the search", file=sys.stderr)
    missing = [s["study"] for s in rep["studies"] if not s["best"]]
    if code == 0 and missing:
        print(f"no trial of {', '.join(missing)} completed", file=sys.stderr)
        return 1
    return code


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m launcher", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sweep", help="expand a grid file and run or submit its cells")
    s.add_argument("grid", help="grid file, or a shipped grid: "
                   + ", ".join(sorted(p.stem for p in SHIPPED_GRIDS.glob("*.yaml"))))
    s.add_argument("--executor", choices=executors.names(), default="slurm",
                   help=", ".join(f"{n} ({cls.help})" for n, cls in executors.REGISTRY.items()))
    s.add_argument("--out", help="sweep directory (default: sweeps/<grid name>)")
    s.add_argument("--json", action="store_true", help="dry-run: print cells as JSON")
    s.add_argument("--workers", type=int, default=None,
                   help="local: cells at a time (default: GPUs x cells-per-gpu, else 1)")
    s.add_argument("--cells-per-gpu", type=int, default=1,
                   help="local: cells sharing one GPU at a time (default 1; one fewer on "
                        "a GPU where a cell ran out of memory beside others)")
    running_flags(s)
    s.add_argument("--where", action="append", default=[], metavar="KEY=VALUE[,VALUE...]",
                   help="only the cells with these parameter values (repeatable)")
    s.add_argument("--extend", action="store_true",
                   help="add the cells --out lacks to that sweep of the same grid (a study grown "
                   "a slice at a time; started if absent); its other cells are left as they are")
    s.add_argument("--reuse", action="append", default=[], metavar="SWEEP",
                   help="copy the results of cells SWEEP completed with the same configuration "
                        "instead of running them again (repeatable)")
    s.set_defaults(func=cmd_sweep)
    st = sub.add_parser("status", help="state of every cell")
    st.add_argument("sweep")
    st.add_argument("--json", action="store_true")
    st.add_argument("--watch", nargs="?", type=watch_seconds, const=10.0, default=None,
                    help="refresh every SECONDS (default 10) until nothing is queued or running")
    st.set_defaults(func=cmd_status)
    r = sub.add_parser("resume", help="resubmit cells without a COMPLETED result")
    r.add_argument("sweep")
    r.add_argument("--executor", choices=executors.names(resumable=True), default=None,
                   help="default: the sweep's own")
    r.add_argument("--workers", type=int, default=None)
    r.add_argument("--cells-per-gpu", type=int, default=1)
    running_flags(r)
    r.add_argument("--where", action="append", default=[], metavar="KEY=VALUE[,VALUE...]",
                   help="only the unfinished cells with these parameter values (repeatable)")
    r.set_defaults(func=cmd_resume)
    c = sub.add_parser("cancel", help="cancel a sweep's jobs (all, or --cells)")
    c.add_argument("sweep")
    c.add_argument("--cells", nargs="+")
    c.set_defaults(func=cmd_cancel)
    a = sub.add_parser("aggregate", help="a sweep's tables (md, csv, tex), plots, results.parquet")
    a.add_argument("sweep", nargs="+", help="a sweep, or several aggregated as one")
    a.add_argument("--out", help="output folder (default: SWEEP/aggregate; needed for several)")
    a.add_argument("--where", action="append", default=[], help="only cells with KEY=V1[,V2...]")
    a.add_argument("--no-plots", action="store_true")
    a.add_argument("--versus", nargs="+", default=[], metavar="MODEL",
                   help="also paired_vs_MODEL: that model against every other (not the best)")
    a.set_defaults(func=cmd_aggregate)
    t = sub.add_parser("tune", help="search a grid's hyper-parameters, the same budget for every "
                                    "model (its search block); `tune status DIR`: the trials")
    t.add_argument("target", nargs="+", metavar="GRID | status DIR",
                   help="a grid file with a search block, or a shipped one: tune-quickstart, ...")
    t.add_argument("--executor", choices=executors.names(), default="slurm")
    t.add_argument("--trials", type=int, help="trials per model and dataset (default: the "
                                              "grid's search.trials)")
    t.add_argument("--parallel", type=int, help="trials per wave, submitted together "
                                                "(default: the grid's search.parallel)")
    t.add_argument("--out", help="sweep directory (default: sweeps/<grid name>); the same "
                                 "command on it again continues the search")
    t.add_argument("--emit-grid", metavar="FILE", help="at the end, the best parameters per "
                                                       "model and dataset as a grid file")
    t.add_argument("--json", action="store_true", help="status: the report, dry-run: the first wave, as JSON")
    t.add_argument("--cells-per-gpu", type=int, default=1,
                   help="local: trials sharing one GPU at a time (default 1)")
    t.add_argument("--mps", action="store_true",
                   help="local: the trials on GPUs as clients of an NVIDIA MPS daemon started "
                        "for each wave (see sweep --mps)")
    t.set_defaults(func=cmd_tune)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(guarded(main))
