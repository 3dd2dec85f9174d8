"""What compiling a cell's encoder costs (`compile_encoder: true`): on empty caches, in a later
cell of the same worker process, and in a later process that finds Inductor's and Triton's
caches on disk (a sweep's `.cache/`, which its cells share: jobs/train_cell.py).

    python -m benchmarks.compile_reuse [--model xlstm] [--dataset ml-100k] [--cells 3] \
        [--out results/benchmarks/compile_reuse]
    python -m benchmarks.compile_reuse --smoke --out /tmp/cr      # CPU: a tiny SASRec

Two sweeps of one grid (`--cells` seeds of one model, 2 epochs, the encoder compiled) share one
set of caches, empty at the start. The first sweep runs its cells one after another in one
persistent worker: its first cell compiles on empty caches, the later ones in the same process.
The second runs a process per cell: each compiles anew and finds the first sweep's caches.
Per cell, `compile_s` is the result's `time_capture_s`: the step's warm-up and CUDA-graph
capture, the compile inside its first call. On the CPU the trainer's eager loop compiles nothing
(its `train_step` says so): `--smoke` runs the two sweeps and their table, not a compile.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import pandas as pd

from benchmarks.grid_throughput import caches, launcher
from benchmarks.report import write

SHAPES = {   # the paper grid's ML-100K cell, shortened to 2 epochs; the smoke cell on the CPU
    "gpu": dict(epochs=2, patience=3, loss="ce", ks=[5, 10, 20], embedding_dim=64,
                num_heads=2, num_blocks=1, batch_size=128, optimizer="adam", lr=1.0e-3,
                max_len=64),
    "smoke": dict(epochs=1, patience=1, embedding_dim=16, num_heads=2, num_blocks=1,
                  batch_size=64, max_len=20, device="cpu"),
}


def grid(model: str, dataset: str, cells: int, smoke: bool) -> dict:
    return {"name": f"compile-reuse-{model}",
            "description": "One model, its encoder compiled, a few seeds (benchmarks/compile_reuse.py).",
            "fixed": {**SHAPES["smoke" if smoke else "gpu"], "compile_encoder": True},
            "grid": {"model": [model], "dataset": [dataset], "seed": list(range(1, cells + 1))},
            "resources": {"gpus": 0 if smoke else 1, "cpus": 2, "mem": "8G",
                          "time": "00:30:00"}}


def sweep(grid_file: Path, out: Path, env: dict, process_per_cell: bool) -> list[dict]:
    args = ["sweep", str(grid_file), "--executor", "local", "--workers", "1", "--out", str(out)]
    proc = launcher(args + (["--process-per-cell"] if process_per_cell else []), env)
    if proc.returncode:
        raise SystemExit(f"launcher {' '.join(args)}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    rows = []
    for cell in sorted((out / "cells").iterdir()):
        r = json.loads((cell / "result.json").read_text())
        before = r.get("runner_cells_before") or 0
        where = ("new process, caches on disk" if process_per_cell else
                 "same process, a cell before" if before else "new process, empty caches")
        rows.append({"device": r.get("device"), "model": r["model"], "dataset": r["dataset"],
                     "seed": r["seed"], "where": where, "runner": r.get("runner"),
                     "cells_before_in_process": before, "status": r["status"],
                     "compile_s": r.get("time_capture_s"), "setup_s": r.get("time_setup_s"),
                     "train_step": r.get("train_step"), "test_recall@10": r.get("test_recall@10")})
    # the worker ran its cells in queue order: the empty-cache cell first
    return sorted(rows, key=lambda row: row["cells_before_in_process"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="default: xlstm (smoke: sasrec)")
    p.add_argument("--dataset", default=None, help="default: ml-100k (smoke: synthetic)")
    p.add_argument("--cells", type=int, default=3, help="seeds, i.e. cells of each sweep")
    p.add_argument("--smoke", action="store_true", help="a tiny SASRec on the CPU")
    p.add_argument("--out", default="results/benchmarks/compile_reuse")
    p.add_argument("--name", default="compile_reuse", help="the output files' name")
    args = p.parse_args(argv)
    model = args.model or ("sasrec" if args.smoke else "xlstm")
    dataset = args.dataset or ("synthetic" if args.smoke else "ml-100k")
    with tempfile.TemporaryDirectory(prefix="compile-reuse-") as tmp:
        work = Path(tmp)
        env = {**__import__("os").environ, **caches(work / "caches")}
        grid_file = work / "grid.yaml"
        grid_file.write_text(json.dumps(grid(model, dataset, args.cells, args.smoke)))
        rows = sweep(grid_file, work / "worker", env, process_per_cell=False)
        rows += sweep(grid_file, work / "process", env, process_per_cell=True)
    table = pd.DataFrame(rows)
    command = "python -m benchmarks.compile_reuse" + (" --smoke" if args.smoke else "") + \
        f" --model {model} --dataset {dataset} --cells {args.cells}"
    write(Path(args.out), args.name,
          f"# Compiling the encoder: on empty caches, in the same process, in a new process\n\n"
          f"`{command}`; device: the cells' (result.json `device`). `compile_s`: the step's "
          f"warm-up and capture with the encoder's compile in it (`time_capture_s`).",
          table, data=table)
    print(table[["where", "seed", "status", "compile_s", "test_recall@10"]].to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
