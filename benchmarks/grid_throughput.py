"""Grid throughput: how long a researcher waits for a grid, launcher command to the last
result.json, with a process per cell against persistent workers (jobs/worker.py) or SLURM packs.

    python -m benchmarks.grid_throughput [--out results/benchmarks] [--cells-per-gpu 6]
        [--workloads ml100k-paper-54 beauty-sasrec-cell]
        [--modes process-per-cell worker pack process-per-cell-mps worker-mps]
        [--order longest-first grid]
    python -m benchmarks.grid_throughput --smoke --out /tmp/gt     # CPU, tiny, ~1 min
    python -m benchmarks.grid_throughput --workloads beauty-sasrec-cell --modes process-per-cell \
        --cells-per-gpu 1 --epochs 1 --repeat 2 --name beauty_cell_cpu    # CPU: what is not training

Workloads: `ml100k-paper-54` is `python -m launcher sweep paper --where dataset=ml-100k` (54
cells; its 9 `pop` cells ask for no GPU and run on the CPU), `beauty-sasrec-cell` the
amazon-beauty grid's SASRec seed-42 cell (`--where model=sasrec --where seed=42`); `--smoke`
replaces them with `smoke-grid` (6 tiny synthetic cells) and `smoke-cell` (one) on the CPU.
Modes: `process-per-cell` (`--process-per-cell`), `worker` (the local executor's default) and
`pack` (the SLURM executor with `--cells-per-job`, where SLURM_CONF names a cluster; the wall
time runs until `status` shows every cell finished); `process-per-cell-mps` and `worker-mps`
are the first two with `--mps` (the GPU cells share their GPU through an NVIDIA MPS daemon,
so their kernels can run at the same time; `mps_clients`: the cells that ran as its clients).
`--order`: the local executor's queue order(s), one run each (`order`: the one its submissions
record; pack: none). Every run starts cold: empty data, Triton and Inductor caches, and on an
image without bytecode an empty bytecode cache (`--warm`: one set of caches for all runs,
`RECSYS_PYCACHE` naming the bytecode's: recsys_core/bytecode.py). `--epochs N`
caps every cell at N epochs (a copy of the grid with `fixed.epochs: N`; the cells' ids change
with it): on a machine too slow to train a cell through, what is not training is timed all
the same. `--set KEY=VALUE` fixes a setting in every cell the same way (e.g.
`fused_layer_norm=true`). `--repeat K`: each run K times.

Per run: wall_s (the launcher command, and for `pack` the polling, to the last result),
last_result_s (the command's start to the last result.json written: wall_s less it is the
launcher's own ending, e.g. its workers closing), cells_per_min, overhead_share = 1 − Σ cells'
epoch seconds / (wall_s × slots), i.e. the share of the slots' time (cells running at once)
not spent in training epochs, the medians of the cells' start-up and setup seconds
(`warm_setup_s`: cells that were not their process's first), and `metrics_equal`: cells whose
test metrics equal those of the first run of the workload.
Phases of the local modes, from the cells' files (no clock but this machine's; per run the
medians over its cells): `launcher_s` the command's start → the cell handed to its process
(local.pid written: the launcher's own start, and for later cells their wait in the queue),
`to_run_s` that → the trainer's run() began (result.json's time less `wall_time_s`: a new
process's interpreter and imports; `start_s` is what the cell itself recorded), setup, epochs,
saving and final as the result records them, `exit_s` result.json → local.exit (the cell's
process ending: interpreter and CUDA teardown; a worker's answer), and per run `end_s` the last
local.exit → the command returned (the launcher's own ending). For one cell they add up to
wall_s.
`--profile` also times one process's per-cell setup on the CPU, phase by phase, for the first
and later cells (ML-100K, L=64; --smoke: tiny): where setup goes, what a warm worker still pays.
Writes OUT/NAME.{md,csv}, OUT/NAME_cells.csv (NAME: `--name`, default grid_throughput; every
cell of every run: its model, start-up, setup, capture (the first epoch's CUDA-graph capture
with any Triton or Inductor compile), epochs, the phases above and test Recall@10: where a warm
worker or a warm compile cache saves time) and, with `--profile`, grid_setup_profile.{md,csv}.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks.report import write
from launcher.executors.order import ORDERS

REPO = Path(__file__).resolve().parents[1]
WORKLOADS = {
    "ml100k-paper-54": ["paper", "--where", "dataset=ml-100k"],
    "beauty-sasrec-cell": ["amazon-beauty", "--where", "model=sasrec", "--where", "seed=42"],
}
TINY = {"dataset": "synthetic", "synthetic": {"n_users": 80, "n_items": 40,
                                             "n_interactions": 1600, "seed": 3},
        "max_len": 8, "embedding_dim": 8, "num_heads": 2, "num_blocks": 1, "batch_size": 32,
        "wandb_mode": "disabled", "device": "cpu", "epochs": 3, "patience": 5}


def smoke_workloads(folder: Path) -> dict[str, list[str]]:
    grid = folder / "smoke.yaml"
    grid.write_text(json.dumps({"name": "smoke", "fixed": TINY, "resources": {"gpus": 0},
                                "grid": {"model": ["sasrec", "gru4rec", "pop"], "seed": [1, 2]}}))
    return {"smoke-grid": [str(grid)],
            "smoke-cell": [str(grid), "--where", "model=sasrec", "--where", "seed=1"]}


MODES = ("process-per-cell", "worker", "pack", "process-per-cell-mps", "worker-mps")


def capped(grid_args: list[str], epochs: int | None, folder: Path,
           settings: dict | None = None) -> list[str]:
    """The workload's launcher arguments with its grid copied to `folder`, every cell's epochs
    capped at `epochs` and `settings` fixed in every cell (None and {}: as they are)."""
    fixed = {**(settings or {}), **({"epochs": epochs} if epochs is not None else {})}
    if not fixed:
        return grid_args
    from launcher.__main__ import grid_path
    from launcher.resources import read_yaml
    source = grid_path(grid_args[0])
    grid = read_yaml(source, "grid")
    grid.setdefault("name", source.stem)
    grid["fixed"] = {**grid.get("fixed", {}), **fixed}
    copy = folder / f"{source.stem}-{'-'.join(f'{k}{v}' for k, v in fixed.items())}.yaml"
    copy.write_text(json.dumps(grid))
    return [str(copy), *grid_args[1:]]


def setting(text: str) -> tuple[str, object]:
    """--set KEY=VALUE: the value as JSON where it parses (true, 3, "x"), else the text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE, e.g. "
                                         "fused_layer_norm=true")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def mode_args(mode: str, slots: int, order: str | None = ORDERS[0]) -> list[str]:
    """The launcher's arguments of a mode (`order`: the local modes' queue order)."""
    if mode.endswith("-mps"):     # the same, the GPU cells clients of an MPS daemon
        return [*mode_args(mode.removesuffix("-mps"), slots, order), "--mps"]
    local = ["--executor", "local", "--workers", str(slots), "--cells-per-gpu", str(slots),
             "--order", order]
    if mode == "process-per-cell":
        return [*local, "--process-per-cell"]
    if mode == "worker":
        return local
    if mode == "pack":
        return ["--executor", "slurm", "--cells-per-job", str(slots)]
    raise SystemExit(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")


def caches(folder: Path) -> dict[str, str]:
    """The caches a run starts with. Where torch has no bytecode beside its sources (the
    device's image), Python's bytecode is one of them, as a sweep's `.cache/pycache` is for its
    cells (recsys_core/bytecode.py): cold in a cold run, kept with `--warm`."""
    from recsys_core.bytecode import bytecode_missing
    folder.mkdir(parents=True, exist_ok=True)
    env = {"RECSYS_DATA_CACHE": str(folder / "data"), "TRITON_CACHE_DIR": str(folder / "triton"),
           "TORCHINDUCTOR_CACHE_DIR": str(folder / "inductor")}
    if bytecode_missing():
        env["RECSYS_PYCACHE"] = str(folder / "pycache")
    return env


def launcher(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launcher", *args], cwd=REPO, env=env,
                          capture_output=True, text=True)


def wait_finished(sweep: Path, env: dict, timeout_s: float = 7200) -> None:
    """Poll `status` until no cell is queued or running (a SLURM sweep returns at submission)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        rows = json.loads(launcher(["status", str(sweep), "--json"], env).stdout or "[]")
        if rows and all(r["state"] not in ("PENDING", "RUNNING") for r in rows):
            return
        time.sleep(1.0)
    raise RuntimeError(f"{sweep}: cells still running after {timeout_s:.0f} s")


def measure(name: str, grid_args: list[str], mode: str, slots: int, order: str | None, work: Path,
            env: dict, label: str = "") -> tuple[dict, dict[str, dict]]:
    sweep = work / f"{name}-{mode}-{slots}-{order}{label}"
    t0, started = time.perf_counter(), time.time()
    proc = launcher(["sweep", *grid_args, "--out", str(sweep), *mode_args(mode, slots, order)],
                    env)
    if mode == "pack" and proc.returncode == 0:
        wait_finished(sweep, env)
    wall = time.perf_counter() - t0
    ended = started + wall
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{name} {mode}: launcher exit {proc.returncode}: {proc.stderr[-2000:]}")
    manifest = json.loads((sweep / "manifest.json").read_text())
    results, written = {}, []
    for c in manifest["cells"]:
        path = sweep / "cells" / c["id"] / "result.json"
        results[c["name"]] = json.loads(path.read_text()) if path.exists() else {}
        results[c["name"]]["_phases"] = phases(sweep / "cells" / c["id"], started,
                                               results[c["name"]])
        written += [path.stat().st_mtime - started] if path.exists() else []
    orders = {json.loads(line).get("order") for line in (sweep / "submissions.jsonl").open()}
    done = [r for r in results.values() if r.get("status") == "COMPLETED"]
    parts = {p: [r.get(f"time_{p}_s") or 0.0 for r in done] for p in ("start", "setup", "epochs")}
    warm = [r["time_setup_s"] for r in done if r.get("runner_cells_before")]
    used = min(slots, len(results))
    devices = [r.get("device") for r in done if r.get("device")]
    exits = [r["_phases"]["exited_at"] for r in results.values() if r["_phases"]["exited_at"]]
    row = {"workload": name, "device": max(set(devices), key=devices.count) if devices else None,
           "cells": len(results), "completed": len(done), "wall_s": wall,
           "last_result_s": max(written, default=None),
           "cells_per_min": 60 * len(results) / wall,
           "overhead_share": 1 - sum(parts["epochs"]) / (wall * used), "mode": mode,
           "order": orders.pop() if len(orders) == 1 else None,
           "slots": used, "epochs_s_sum": sum(parts["epochs"]),
           "start_s_median": statistics.median(parts["start"]) if done else None,
           "setup_s_median": statistics.median(parts["setup"]) if done else None,
           "warm_setup_s": statistics.median(warm) if warm else None,
           "mps_clients": sum(bool(r.get("mps_pipe_dir")) for r in done),
           **{f"{p}_s": median([r["_phases"][f"{p}_s"] for r in done])
              for p in ("launcher", "to_run", "exit")},
           "end_s": ended - started - max(exits) if exits else None}
    return row, results


def median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def phases(cell_dir: Path, started: float, result: dict) -> dict:
    """A cell's phases outside its result's own times, from its files' times (module doc):
    launcher_s, to_run_s, exit_s; None where the files are not there (SLURM packs)."""
    def mtime(name: str) -> float | None:
        path = cell_dir / name
        return path.stat().st_mtime if path.exists() else None
    handed, result_at, exited = mtime("local.pid"), mtime("result.json"), mtime("local.exit")
    ran = result_at - result["wall_time_s"] if result_at and result.get("wall_time_s") else None
    return {"launcher_s": handed - started if handed else None,
            "to_run_s": ran - handed if ran and handed else None,
            "exit_s": exited - result_at if exited and result_at else None,
            "exited_at": exited - started if exited else None}


def cell_rows(run: dict, results: dict[str, dict]) -> list[dict]:
    """One row per cell of a run: first cells of their process first."""
    rows = [{"workload": run["workload"], "mode": run["mode"], "slots": run["slots"],
             "order": run["order"],
             "cell": name, "model": r.get("model"), "status": r.get("status"),
             "cells_before_in_process": r.get("runner_cells_before"),
             "launcher_s": r["_phases"]["launcher_s"], "to_run_s": r["_phases"]["to_run_s"],
             **{f"{p}_s": r.get(f"time_{p}_s") for p in ("start", "setup", "capture", "epochs",
                                                          "saving", "final")},
             "exit_s": r["_phases"]["exit_s"],
             "epochs": r.get("epochs_run"), "test_recall@10": r.get("test_recall@10"),
             # what ran: a graph or the eager step (and why), the LayerNorms' kernels
             "train_step": r.get("train_step"), "layer_norm_kernels": r.get("layer_norm_kernels")}
            for name, r in results.items()]
    return sorted(rows, key=lambda r: (r["cells_before_in_process"] or 0, r["start_s"] or 0.0))


def same_metrics(a: dict[str, dict], b: dict[str, dict]) -> str:
    """Cells of b whose test metrics equal a's ('n/m')."""
    def test(r):
        return {k: v for k, v in r.items() if k.startswith("test_")}
    equal = sum(bool(test(r)) and test(r) == test(a.get(n, {})) for n, r in b.items())
    return f"{equal}/{len(b)}"


def imports(sweep: Path, top: int = 40) -> pd.DataFrame:
    """The `top` slowest imports (cumulative, with what they import) of the first cell's
    process in a sweep run under PYTHONPROFILEIMPORTTIME (its local.err); depth 0: imported by
    the process itself."""
    cell = json.loads((sweep / "manifest.json").read_text())["cells"][0]["id"]
    rows = []
    for line in (sweep / "cells" / cell / "local.err").read_text().splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        own, total, module = line.removeprefix("import time:").split("|")
        rows.append({"module": module.strip(),
                     "depth": (len(module) - len(module.lstrip()) - 1) // 2,
                     "cumulative_s": int(total) / 1e6, "self_s": int(own) / 1e6})
    return pd.DataFrame(rows).sort_values("cumulative_s", ascending=False).head(top)


def setup_profile(cfgs: list[dict], out: Path) -> pd.DataFrame:
    """One process (this one; it has not imported torch yet) sets up cfgs one after another as
    a worker does: seconds per phase of each cell's setup."""
    rows, t0 = [], time.perf_counter()
    from recsys_core.train.config import TrainConfig
    from recsys_core.train.prepared import Prepared
    from recsys_core.train.optim import make_optimizer
    from recsys_core.train.setup import build_run, make_accelerator
    from recsys_core.models import build_model
    rows.append({"cell": "-", "phase": "import torch, accelerate, the trainer",
                 "s": time.perf_counter() - t0})
    prepared = Prepared()
    for i, values in enumerate(cfgs):
        cfg = TrainConfig(**{**values, "out": str(out / f"p{i}")})
        label = f"{i + 1}: {cfg.model} {cfg.dataset} L{cfg.max_len}"

        def phase(name: str, fn):
            t = time.perf_counter()
            value = fn()
            rows.append({"cell": label, "phase": name, "s": time.perf_counter() - t})
            return value
        accelerator = phase("accelerator", lambda: make_accelerator(cfg))
        data, _ = phase("dataset + split (kept across cells)",
                        lambda: prepared.data(cfg, accelerator.device))
        model = phase("model build (alone)", lambda: build_model(
            cfg.model, data.n_items, cfg, accelerator.device.type))
        phase("optimiser (alone; the first imports torch._dynamo)",
              lambda: make_optimizer(cfg, model, cfg.lr, capturable=False))
        phase("build_run: seed, model, optimiser, windows, step",
              lambda: build_run(cfg, accelerator=accelerator, prepared=prepared))
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.grid_throughput")
    p.add_argument("--out", default=str(REPO / "results" / "benchmarks"))
    p.add_argument("--workloads", nargs="*", default=None,
                   help="default: all; none (the flag alone): only --profile")
    p.add_argument("--modes", nargs="+", default=["process-per-cell", "worker"], choices=MODES)
    p.add_argument("--cells-per-gpu", type=int, nargs="+", default=[6],
                   help="cells at a time (slots; pack: cells per job); one row each")
    p.add_argument("--order", nargs="+", default=[ORDERS[0]], choices=ORDERS,
                   help="the local executor's queue order(s), one run each (default: its own)")
    p.add_argument("--smoke", action="store_true", help="tiny synthetic workloads on the CPU")
    p.add_argument("--warm", action="store_true", help="one set of caches for every run")
    p.add_argument("--profile", action="store_true", help="also profile one process's setup")
    p.add_argument("--epochs", type=int, default=None, metavar="N",
                   help="cap every cell at N epochs (a copy of the grid)")
    p.add_argument("--repeat", type=int, default=1, metavar="K", help="each run K times")
    p.add_argument("--set", type=setting, action="append", default=[], metavar="KEY=VALUE",
                   help="fixed in every cell (a copy of the grid), e.g. fused_layer_norm=true")
    p.add_argument("--importtime", action="store_true",
                   help="then one more run of the first, its processes under `python -X "
                        "importtime`: OUT/NAME_imports.csv")
    p.add_argument("--name", default="grid_throughput", help="the output files' name")
    args = p.parse_args(argv)
    if args.epochs is not None and args.epochs < 1 or args.repeat < 1:
        raise SystemExit(f"--epochs {args.epochs} --repeat {args.repeat}: both must be >= 1")
    work = Path(tempfile.mkdtemp(prefix="grid-throughput-"))
    workloads = smoke_workloads(work) if args.smoke else WORKLOADS
    chosen = list(workloads) if args.workloads is None else args.workloads
    rows, first, cells = [], {}, []
    runs = [(n, m, k, o, r) for n in chosen for m in args.modes for k in args.cells_per_gpu
            for o in (args.order if m != "pack" else [None]) for r in range(args.repeat)]
    unknown = [n for n in chosen if n not in workloads]
    if unknown:
        raise SystemExit(f"unknown workload {unknown[0]!r}; valid: {', '.join(workloads)}")
    grids = {n: capped(workloads[n], args.epochs, work, dict(args.set)) for n in chosen}
    for name, mode, slots, order, rep in runs:
        label = f"-r{rep}" if rep else ""
        cache = caches(work / ("caches" if args.warm else
                               f"caches-{name}-{mode}-{slots}-{order}{label}"))
        env = {**os.environ, **cache}
        row, results = measure(name, grids[name], mode, slots, order, work, env, label)
        row["caches"] = "warm" if args.warm and rows else "cold"
        row["metrics_equal"] = same_metrics(first.setdefault(name, results), results)
        rows.append(row)
        cells.extend(cell_rows(row, results))
        print(json.dumps(row), flush=True)
    machine = (f"Machine: {os.uname().nodename}, {os.cpu_count()} CPU cores. "
               "`python -m benchmarks.grid_throughput "
               + " ".join(argv if argv is not None else sys.argv[1:]) + "`")
    if rows:
        print(write(Path(args.out), args.name,
                    f"# Grid throughput ({time.strftime('%Y-%m-%d')})",
                    machine + "; device: the cells' (result.json `device`)", pd.DataFrame(rows),
                    "Per run: " + __doc__.split("Per run:")[1].split("Writes OUT")[0].strip(),
                    data=pd.DataFrame(rows)), end="")
        pd.DataFrame(cells).to_csv(Path(args.out) / f"{args.name}_cells.csv", index=False)
    if args.importtime and runs:
        name, mode, slots, order, _ = runs[0]
        env = {**os.environ, **caches(work / "caches-importtime"), "PYTHONPROFILEIMPORTTIME": "1"}
        _, results = measure(name, grids[name], mode, slots, order, work, env, "-importtime")
        imports(work / f"{name}-{mode}-{slots}-{order}-importtime").to_csv(
            Path(args.out) / f"{args.name}_imports.csv", index=False)
    if args.profile:
        shape = TINY if args.smoke else {"dataset": "ml-100k", "max_len": 64, "embedding_dim": 64,
                                         "num_heads": 2, "num_blocks": 1, "device": "cpu",
                                         "wandb_mode": "disabled"}
        profile = setup_profile([{**shape, "model": m} for m in PROFILED], work)
        print(write(Path(args.out), "grid_setup_profile",
                    f"# One process's setup, cell after cell, on the CPU "
                    f"({time.strftime('%Y-%m-%d')})", machine, profile, PROFILE_NOTE,
                    data=profile), end="")
    return 0


PROFILED = ("sasrec", "xlstm", "gru4rec", "sasrec")
PROFILE_NOTE = ("Cell 1 pays the process's first-time costs (imports inside the first "
                "optimiser, build_run's first call); the dataset is loaded once and its split "
                "and training windows kept (recsys_core/train/prepared.py), so later cells pay "
                "the model, the optimiser and the step only. On a GPU a cell also captures its "
                "CUDA graph in its first epoch (`time_capture_s`, counted in the epochs).")


if __name__ == "__main__":
    sys.exit(main())
