"""What a search has found: every trial with its state and value, and the best so far per model
and dataset (`python -m launcher tune status DIR [--json]`); and the best parameters as a grid
file that `python -m launcher sweep FILE` runs at the search's final seeds (`tune --emit-grid`).
Read from the sweep directory alone (its manifest and tune.journal), like `status`.
"""
from __future__ import annotations

import dataclasses
import textwrap
import time
from pathlib import Path

import yaml

from launcher import executors
from launcher.grid import Cell, Grid
from launcher.resources import Resources
from launcher.status import cell_states
from launcher.sweep import Sweep
from launcher.trials import JOURNAL, open_storage, optuna


def _describe_pruner(spec: dict) -> str:
    options = ", ".join(f"{k} {v}" for k, v in spec.items() if k != "type")
    return f"{spec['type'].replace('_', '-')} pruner" + (f" ({options})" if options else "")


def describe(tune: dict) -> str:
    """The budget, the same for every model, in a line."""
    s = tune["settings"]
    return (f"{s['metric']}, {tune['trials']} trials per model and dataset in waves of "
            f"{tune['parallel']}, TPE (seed {s['seed']}, {s['startup_trials']} at random "
            f"first), {_describe_pruner(s['pruner'])}")


def report(sweep: Sweep) -> dict:
    """{name, budget, studies: [per model and dataset: counts and the best trial], trials:
    [every trial: study, number, state, value, pruned_epoch, params, cell, cell_state,
    reason]}. ValueError if the directory holds no search."""
    manifest = sweep.manifest()
    tune = manifest.get("tune")
    if tune is None or not (sweep.root / JOURNAL).exists():
        raise ValueError(f"{sweep.root}: no search here (no tune.journal); "
                         "`python -m launcher tune GRID --out DIR` starts one")
    try:
        cells = {r["id"]: r["state"] for r in cell_states(sweep)}
    except executors.ExecutorError:
        cells = {}                                  # SLURM unreachable: the journal alone
    lib, storage = optuna(), open_storage(sweep.root)
    trials, studies = [], []
    for name in tune["settings"]["studies"]:
        model, dataset = name.split("/", 1)
        try:
            found = lib.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
        except KeyError:                            # not created yet
            found = []
        rows = []
        for t in found:
            cell = t.user_attrs.get("cell")
            rows.append({"study": name, "model": model, "dataset": dataset, "number": t.number,
                         "state": t.state.name, "value": t.value,
                         "pruned_epoch": t.user_attrs.get("pruned_epoch"),
                         "epochs": t.user_attrs.get("epochs", t.last_step),
                         "params": t.params, "cell": cell, "cell_state": cells.get(cell),
                         "reason": t.user_attrs.get("reason")})
        done = [r for r in rows if r["state"] == "COMPLETE"]
        best = max(done, key=lambda r: (r["value"], -r["number"])) if done else None
        studies.append({"study": name, "model": model, "dataset": dataset,
                        "budget": tune["trials"], "trials": len(rows),
                        **{s.lower(): sum(r["state"] == s for r in rows)
                           for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")},
                        "best": best and {k: best[k] for k in ("number", "value", "params",
                                                               "cell")}})
        trials += rows
    return {"name": manifest["name"], "metric": tune["settings"]["metric"],
            "budget": {"trials_per_study": tune["trials"], "parallel": tune["parallel"],
                       "description": describe(tune), **tune["settings"]},
            "studies": studies, "trials": trials}


def _params(params: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in params.items())


def render(rep: dict) -> str:
    lines = [f"search {rep['name']}: {rep['budget']['description']}", "",
             f"{'study':<28}{'trial':>5}  {'state':<11}{'cell':<13}{'value':>8}  params"]
    for r in rep["trials"]:
        state = r["state"] if r["state"] != "RUNNING" else (r["cell_state"] or "RUNNING")
        value = f"{r['value']:.4f}" if r["value"] is not None else "-"
        note = f"  (pruned after epoch {r['pruned_epoch']})" if r["pruned_epoch"] else ""
        note += f"  ({r['reason']})" if r["state"] == "FAIL" and r["reason"] else ""
        lines.append(f"{r['study']:<28}{r['number']:>5}  {state:<11}{str(r['cell']):<13}"
                     f"{value:>8}  {_params(r['params'])}{note}")
    lines += ["", f"best so far ({rep['metric']}):"]
    for s in rep["studies"]:
        counts = (f"{s['trials']}/{s['budget']} trials: {s['complete']} complete, "
                  f"{s['pruned']} pruned, {s['fail']} failed, {s['running']} running")
        b = s["best"]
        lines.append(f"  {s['study']:<26} " + (
            f"trial {b['number']} {b['value']:.4f}  {_params(b['params'])}  [{counts}]"
            if b else f"none yet  [{counts}]"))
    return "\n".join(lines)


def _resources(res: Resources) -> dict:
    default = Resources()
    return {k: v for k, v in dataclasses.asdict(res).items() if v != getattr(default, k)}


def best_grid(grid: Grid, bases: dict[str, Cell], rep: dict, source: Path) -> tuple[dict, str]:
    """(the grid, its header comment): every model and dataset with a completed trial, its
    best parameters, at the search's final seeds."""
    best = {s["study"]: s for s in rep["studies"] if s["best"]}
    if not best:
        raise ValueError(f"{source}: no trial has completed yet: no best parameters to emit")
    per = {name: {**{k: v for k, v in bases[name].params.items() if k != "seed"},
                  **best[name]["best"]["params"]} for name in bases if name in best}
    first = next(iter(per.values()))
    fixed = {k: v for k, v in first.items() if k not in ("model", "dataset")
             and all(k in p and p[k] == v for p in per.values())}
    models = list(dict.fromkeys(p["model"] for p in per.values()))
    datasets = list(dict.fromkeys(p["dataset"] for p in per.values()))
    resources = {name: _resources(bases[name].resources) for name in per}
    shared = all(r == resources[next(iter(per))] for r in resources.values())
    overrides = []
    for name, params in per.items():
        own = {k: v for k, v in params.items() if k not in fixed and k not in ("model", "dataset")}
        if not shared:
            own["resources"] = resources[name]
        if own:
            overrides.append({"when": {"model": params["model"], "dataset": params["dataset"]},
                              "set": own})
    out = {"name": f"{grid.name}-best",
           "description": f"The best trial of each model and dataset of search {grid.name} "
                          f"({rep['budget']['description']}), at seeds "
                          f"{', '.join(map(str, grid.search.final_seeds))}.",
           "fixed": fixed,
           "grid": {"model": models, "dataset": datasets, "seed": list(grid.search.final_seeds)}}
    missing = [{"model": m, "dataset": d} for m in models for d in datasets
               if f"{m}/{d}" not in per]
    if missing:
        out["exclude"] = missing
    if overrides:
        out["overrides"] = overrides
    if shared and resources[next(iter(per))]:
        out["resources"] = resources[next(iter(per))]
    header = [f"Written by `python -m launcher tune` from {source}",
              f"on {time.strftime('%Y-%m-%d %H:%M')}: each model's best trial on each dataset, "
              "at the search's final seeds.",
              "Run it with: python -m launcher sweep THIS_FILE",
              "The budget, the same for every model:",
              *textwrap.wrap(f"{rep['budget']['description']}.", 92, initial_indent="  ",
                             subsequent_indent="  ")]
    for s in rep["studies"]:
        b = s["best"]
        header.append(f"  {s['study']}, {s['trials']} trials ({s['complete']} complete, "
                      f"{s['pruned']} pruned, {s['fail']} failed): " + (
                          f"trial {b['number']}, {rep['metric']} {b['value']:.4f}" if b else
                          "none completed: left out"))
        if b:
            header.append(f"    {_params(b['params'])}")
    return out, "".join(f"# {line}\n" for line in header)


class _Dumper(yaml.SafeDumper):
    """Mappings as blocks, lists on one line (as the shipped grids are written)."""


_Dumper.add_representer(list, lambda dumper, data: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", data,
    flow_style=not any(isinstance(v, (list, dict)) for v in data)))


def check_emit_path(path: Path, grid: Grid) -> None:
    """Before the search: --emit-grid names a file the end of the search may write (not a
    folder, not the search's own grid file, which the emitted grid would replace)."""
    if path.is_dir():
        raise ValueError(f"--emit-grid {path}: a folder; name the grid file to write")
    if path.exists() and path.samefile(grid.path):
        raise ValueError(f"--emit-grid {path}: the search's own grid, which the emitted grid "
                         "would replace; name another file")


def emit_grid(grid: Grid, bases: dict[str, Cell], sweep: Sweep, path: Path) -> Path:
    body, header = best_grid(grid, bases, report(sweep), sweep.root)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.dump(body, Dumper=_Dumper, sort_keys=False, width=96))
    return path
