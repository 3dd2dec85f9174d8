"""Data-parallel scaling on GPUs: one cell on 1 and on G GPUs, through the launcher's own path.

Every run is a cell directory (`cell.json`) run by `python -m jobs.train_cell`, exactly as the
local executor and SLURM run it: with num_processes G > 1 that is `accelerate launch
--multi_gpu --num_processes G ...` over the trainer. Per run the trainer's own history gives
the training time of each epoch; the first epoch (Triton compiles, CUDA-graph capture) is left
out of the steady-state figure. Then one checkpoint (the first multi-GPU run's best model) is
evaluated by `python -m recsys_core.train.eval_checkpoint` in 1 process and under
`accelerate launch` in G processes, and the metrics compared.

    python -m benchmarks.scaling --out results/benchmarks/scaling \
        --models sasrec xlstm --gpus 1 2 --modes graph eager

Writes OUT/scaling.csv (one row per run), OUT/eval_equality.json, OUT/scaling.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from benchmarks.report import markdown, write
from launcher.grid import Resources, make_cell
from launcher.sweep import write_cell_file
from recsys_core.train.results import read_result
from benchmarks.timing import timed

# The shape: ML-20M-sized synthetic data, max_len 200, embedding 256, 2 blocks (4 heads,
# the study's ML-20M setting; at 2 heads of 128 dims Triton's LLVM crashed compiling xLSTM's
# kernels on the H200, see results/benchmarks/scaling.md),
# batch 128 per process (the global batch grows with G; lr_scale_with_processes says how the
# learning rate follows, recorded in each result).
BASE = dict(dataset="synthetic-ml-20m", max_len=200, embedding_dim=256, num_blocks=2,
            num_heads=4, batch_size=128, eval_batch_size=1024, patience=100, seed=42,
            device="cuda", wandb_mode="disabled")


def run_cell(cell_dir: Path, params: dict, timeout_s: float) -> dict:
    cell_dir.mkdir(parents=True, exist_ok=True)
    cell = make_cell(cell_dir.name, cell_dir.name, params, Resources(), "scaling", str(cell_dir))
    write_cell_file(cell_dir, cell)      # as the launcher writes it
    with open(cell_dir / "log.txt", "w") as log:
        wall, proc = timed(lambda: subprocess.run(
            [sys.executable, "-m", "jobs.train_cell", str(cell_dir)],
            stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s))
    result = read_result(cell_dir) or {}
    row = {"model": params["model"], "gpus": params["num_processes"],
           "mode": "graph" if params["cuda_graphs"] else "eager", "exit": proc.returncode,
           "status": result.get("status"), "reason": result.get("reason"),
           "train_step": result.get("train_step"), "lr_effective": result.get("lr_effective"),
           "wall_s": round(wall, 1), "peak_gpu_mem_mb": result.get("peak_gpu_mem_mb"),
           "test_recall@10": result.get("test_recall@10")}
    hist_path = cell_dir / "history.parquet"
    if hist_path.exists():
        hist = pd.read_parquet(hist_path)
        steady = hist[hist["epoch"] >= 2] if len(hist) > 1 else hist
        row.update(first_epoch_train_s=float(hist["train_time_s"].iloc[0]),
                   epoch_train_s=float(steady["train_time_s"].median()),
                   eval_s=float(steady["eval_time_s"].median()),
                   train_sequences_per_s=float(steady["train_sequences_per_s"].median()),
                   epochs=int(len(hist)), train_loss_last=float(hist["train_loss"].iloc[-1]))
    return row


def evaluate(run_dir: Path, processes: int, timeout_s: float, device: str) -> dict:
    module = ["-m", "recsys_core.train.eval_checkpoint", str(run_dir), "--device", device]
    env = {**os.environ, **({"ACCELERATE_USE_CPU": "1"} if device == "cpu" else {})}
    if processes == 1:
        cmd = [sys.executable, *module]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
               "--num_processes", str(processes), "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", *module]
    wall, proc = timed(lambda: subprocess.run(cmd, capture_output=True, text=True,
                                              timeout=timeout_s, env=env))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd)}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    return {**json.loads(lines[-1]), "wall_s": round(wall, 1)}


def compare(a: dict, b: dict) -> dict:
    keys = sorted(k for k in a if k.startswith(("val_", "test_")) and k in b)
    diffs = {k: abs(float(a[k]) - float(b[k])) for k in keys}
    return {"metrics_compared": len(keys), "identical": all(d == 0 for d in diffs.values()),
            "max_abs_diff": max(diffs.values()) if diffs else None,
            "differing": {k: [a[k], b[k]] for k, d in diffs.items() if d != 0}}


SPECS = {"epoch train (s)": ".2f", "speed-up vs 1 GPU": ".2f", "seq/s": ",.0f", "eval (s)": ".2f",
         "first epoch (s)": ".1f", "peak MB (rank 0)": ",.0f"}


def summary(rows: list[dict], equality: dict | None, device: str) -> list[str]:
    """scaling.md's parts: title, shape, a table row per run, the evaluation check."""
    df = pd.DataFrame(rows)
    table = []
    for _, r in df.iterrows():
        one = df[(df.model == r.model) & (df["mode"] == r["mode"]) & (df.gpus == 1)]
        t = r.get("epoch_train_s")
        speed = (float(one.epoch_train_s.iloc[0]) / t) if len(one) and t == t and t else None
        table.append({"model": r.model, "mode": r["mode"], "GPUs": r.gpus, "epoch train (s)": t,
                      "speed-up vs 1 GPU": speed, "seq/s": r.get("train_sequences_per_s"),
                      "eval (s)": r.get("eval_s"), "first epoch (s)": r.get("first_epoch_train_s"),
                      "peak MB (rank 0)": r.get("peak_gpu_mem_mb"), "status": r.status,
                      "step": r.train_step})
    parts = [f"# Data-parallel scaling ({device})",
             "`python -m benchmarks.scaling` — " + ", ".join(
                 f"{k}={v}" for k, v in BASE.items() if k not in ("wandb_mode", "device")),
             markdown(pd.DataFrame(table), SPECS)]
    if equality:
        parts.append(f"Evaluation of `{equality['run']}`'s best checkpoint on 1 and on "
                     f"{equality['processes']} processes: {equality['comparison']['metrics_compared']} "
                     f"metrics, identical: {equality['comparison']['identical']}, max abs diff "
                     f"{equality['comparison']['max_abs_diff']}.")
    return parts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scaling")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--models", nargs="+", default=["sasrec"])
    p.add_argument("--gpus", nargs="+", type=int, default=[1, 2])
    p.add_argument("--modes", nargs="+", choices=("graph", "eager"), default=["graph"])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--dataset", default=BASE["dataset"])
    p.add_argument("--no-eval-check", action="store_true")
    p.add_argument("--timeout-s", type=float, default=480)
    p.add_argument("--set", default="{}", help="JSON of cell parameters to override, e.g. a "
                   "small shape and device=cpu for a smoke run on CPU processes (gloo)")
    args = p.parse_args(argv)
    overrides = json.loads(args.set)
    import torch
    cpu = overrides.get("device") == "cpu"
    device = ("CPU processes" if cpu else
              f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
              if torch.cuda.is_available() else "no GPU")
    if not cpu and torch.cuda.device_count() < max(args.gpus):
        print(f"error: --gpus {max(args.gpus)} but {torch.cuda.device_count()} CUDA devices "
              "are visible", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    csv = args.out / "scaling.csv"
    rows = pd.read_csv(csv).to_dict("records") if csv.exists() else []
    equality = None
    for model in args.models:
        for mode in args.modes:
            for g in args.gpus:
                params = {**BASE, "dataset": args.dataset, "model": model, "num_processes": g,
                          "cuda_graphs": mode == "graph", "epochs": args.epochs, **overrides}
                name = f"{model}-{mode}-{g}gpu"
                row = {"run": name, "device": device, "dataset": params["dataset"],
                       **run_cell(args.out / "runs" / name, params, args.timeout_s)}
                print(json.dumps(row), flush=True)
                rows = [r for r in rows if r.get("run") != name] + [row]
                pd.DataFrame(rows).to_csv(csv, index=False)
                if (g > 1 and equality is None and not args.no_eval_check
                        and row["status"] == "COMPLETED"):
                    run_dir = args.out / "runs" / name
                    one = evaluate(run_dir, 1, args.timeout_s, params["device"])
                    many = evaluate(run_dir, g, args.timeout_s, params["device"])
                    result = read_result(run_dir)
                    equality = {"run": name, "processes": g, "device": device,
                                "one_process": one, "many_processes": many,
                                "comparison": compare(one, many),
                                "training_run_vs_one_process": compare(result, one)}
                    (args.out / "eval_equality.json").write_text(json.dumps(equality, indent=1))
                    print(json.dumps(equality["comparison"]), flush=True)
    print(write(args.out, "scaling", *summary(rows, equality, device)))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
