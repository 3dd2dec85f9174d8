"""Data-parallel scaling on GPUs: one cell on 1 and on G GPUs, through the launcher's own path,
with each multi-GPU training step the trainer has, in one call.

Every run is a cell directory (`cell.json`) run by `python -m jobs.train_cell`, exactly as the
local executor and SLURM run it: with num_processes G > 1 that is `accelerate launch
--multi_gpu --num_processes G ...` over the trainer. Per run the trainer's own history gives
the training time of each epoch; the first epoch (Triton compiles, the capture) is left out of
the steady-state figure (so --epochs 2 is the least that measures one).

The multi-GPU step variants (TrainConfig fields, train/grad_sync.py, train/train_step.py):
  flat           eager, one all-reduce of all gradients after the backward (grad_sync: flat)
  overlap        eager, bucketed all-reduces launched during the backward (grad_sync: overlap)
  graph          the step with its all-reduce captured in a CUDA graph (multi_gpu_graph: true)
  graph_overlap  the same with the bucketed all-reduces in the graph
  ddp            the plain eager loop: DDP with the model's own loss (cuda_graphs: false)
The 1-GPU baseline is the single-GPU CUDA-graph step. Runs go in priority order, each only if
what is left of --budget-s can hold it (its estimate: the last run of the same model and GPU
count, else ESTIMATE_S); a run still going when the budget ends, or at 3 times its estimate
plus a minute (a hang), or at --run-timeout-s, is stopped with the processes it started
(status TIMEOUT):
  1. per model: 1 GPU, then the first two variants on G GPUs at the same per-GPU batch;
  2. evaluation equality: the first completed multi-GPU run's best checkpoint evaluated in one
     process (recsys_core.train.eval_checkpoint) against the metrics that run computed on its
     G processes;
  3. per model: the fastest variant so far at the same global batch (per-GPU batch / G);
  4. the remaining variants.
--profile N profiles N steps of each run's first epoch on process 0 (train/step_profile.py;
that epoch is not in the steady-state figure).

    python -m benchmarks.scaling --out results/benchmarks/scaling --work /tmp/scaling-runs \\
        --models sasrec xlstm --gpus 1 2 --variants graph overlap flat --profile 10

Writes into OUT at most five files: scaling.csv (one row per run), scaling.md,
eval_equality.json, profiles.md and runs.tar.gz (each run's cell.json, result.json,
history.parquet, log.txt and profile.txt); the run directories (checkpoints) go to --work.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pandas as pd

from benchmarks.report import markdown, write
from launcher.grid import Resources, make_cell
from launcher.sweep import write_cell_file
from recsys_core.train.results import read_result

# The shape: ML-20M-sized synthetic data, max_len 200, embedding 256, 2 blocks (4 heads,
# the study's ML-20M setting; at 2 heads of 128 dims Triton's LLVM crashed compiling xLSTM's
# kernels on the H200, see results/benchmarks/scaling/scaling.md), batch 128 per process
# (lr_scale_with_processes false: the learning rate stays, recorded in each result).
BASE = dict(dataset="synthetic-ml-20m", max_len=200, embedding_dim=256, num_blocks=2,
            num_heads=4, batch_size=128, eval_batch_size=1024, patience=100, seed=42,
            device="cuda", wandb_mode="disabled")
VARIANTS = {"flat": dict(grad_sync="flat", multi_gpu_graph=False),
            "overlap": dict(grad_sync="overlap", multi_gpu_graph=False),
            "graph": dict(grad_sync="flat", multi_gpu_graph=True),
            "graph_overlap": dict(grad_sync="overlap", multi_gpu_graph=True),
            "ddp": dict(cuda_graphs=False)}
# seconds a run takes at --epochs 2 before one of its kind has run here (2 x H200, issue 19:
# process start, data, compiles, the capture, 2 epochs, the final test; xLSTM compiles more)
ESTIMATE_S = {"sasrec": 60.0, "xlstm": 90.0, "eval": 30.0}
RUN_FILES = ("cell.json", "result.json", "history.parquet", "log.txt", "profile.txt")


def seconds(timeout_s: float) -> float | None:
    return None if timeout_s == float("inf") else max(timeout_s, 1.0)


def stop(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """Ends a run and every process under it (accelerate launch starts its workers in sessions
    of their own, out of reach of a process-group signal): SIGTERM, SIGKILL after grace_s."""
    import psutil      # Accelerate's own dependency
    try:
        procs = [psutil.Process(proc.pid)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        procs = []
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()


def run_cell(cell_dir: Path, params: dict, timeout_s: float) -> dict:
    """One cell through jobs.train_cell; stopped with everything it started after timeout_s."""
    cell_dir.mkdir(parents=True, exist_ok=True)
    cell = make_cell(cell_dir.name, cell_dir.name, params, Resources(), "scaling", str(cell_dir))
    write_cell_file(cell_dir, cell)      # as the launcher writes it
    t0 = time.perf_counter()
    with open(cell_dir / "log.txt", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "jobs.train_cell", str(cell_dir)],
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            code = proc.wait(timeout=seconds(timeout_s))
        except subprocess.TimeoutExpired:
            stop(proc)
            code = "timeout"
    try:
        result = read_result(cell_dir) or {}
    except ValueError:
        result = {}
    row = {"model": params["model"], "gpus": params["num_processes"],
           "batch_per_gpu": params["batch_size"],
           "global_batch": params["batch_size"] * params["num_processes"], "exit": code,
           "status": "TIMEOUT" if code == "timeout" else result.get("status"),
           "reason": result.get("reason"), "train_step": result.get("train_step"),
           "time_capture_s": result.get("time_capture_s"),
           "lr_effective": result.get("lr_effective"), "wall_s": round(time.perf_counter() - t0, 1),
           "peak_gpu_mem_mb": result.get("peak_gpu_mem_mb"),
           "test_recall@10": result.get("test_recall@10"), "nccl_env": result.get("nccl_env")}
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


def evaluate_one_process(run_dir: Path, timeout_s: float, device: str) -> dict:
    """The run's best checkpoint evaluated in one process (eval_checkpoint's JSON line)."""
    cmd = [sys.executable, "-m", "recsys_core.train.eval_checkpoint", str(run_dir),
           "--device", device]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds(timeout_s))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd)}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    return {**json.loads(lines[-1]), "wall_s": round(time.perf_counter() - t0, 1)}


def compare(a: dict, b: dict) -> dict:
    keys = sorted(k for k in a if k.startswith(("val_", "test_")) and k in b
                  and isinstance(a[k], (int, float)))
    diffs = {k: abs(float(a[k]) - float(b[k])) for k in keys}
    return {"metrics_compared": len(keys), "identical": all(d == 0 for d in diffs.values()),
            "max_abs_diff": max(diffs.values()) if diffs else None,
            "differing": {k: [a[k], b[k]] for k, d in diffs.items() if d != 0}}


def plan(models: list[str], multi: list[int], variants: list[str]) -> list[tuple]:
    """The runs in priority order (module text): (model, gpus, variant, batch rule)."""
    first, rest = variants[:2], variants[2:]
    steps = [(m, g, v, "per_gpu") for m in models
             for g, v in [(1, "graph")] + [(g, v) for g in multi for v in first]]
    steps.append(("eval",))
    steps += [(m, g, "fastest", "global") for m in models for g in multi]
    steps += [(m, g, v, "per_gpu") for m in models for g in multi for v in rest]
    return steps


def fastest(rows: list[dict], model: str, gpus: int) -> str | None:
    done = [r for r in rows if r.get("model") == model and r.get("gpus") == gpus
            and r.get("batch") == "per_gpu" and r.get("status") == "COMPLETED"
            and r.get("epoch_train_s") == r.get("epoch_train_s") and r.get("epoch_train_s")]
    return min(done, key=lambda r: r["epoch_train_s"])["variant"] if done else None


SPECS = {"epoch train (s)": ".2f", "speed-up": ".2f", "efficiency": ".0%", "seq/s": ",.0f",
         "eval (s)": ".2f", "first epoch (s)": ".1f", "capture (s)": ".1f",
         "peak MB (rank 0)": ",.0f", "test Recall@10": ".4f", "wall (s)": ".0f"}


def summary(rows: list[dict], equality: dict | None, device: str, command: str,
            shape: dict) -> list[str]:
    """scaling.md's parts: title, command and shape, a table row per run, the evaluation."""
    table = []
    for r in rows:
        base = [b for b in rows if b.get("model") == r.get("model") and b.get("gpus") == 1
                and b.get("epoch_train_s") == b.get("epoch_train_s") and b.get("epoch_train_s")]
        t = r.get("epoch_train_s")
        speed = base[0]["epoch_train_s"] / t if base and t == t and t else None
        table.append({
            "model": r.get("model"), "GPUs": r.get("gpus"), "step": r.get("variant"),
            "batch": f"{r.get('batch_per_gpu')}/GPU = {r.get('global_batch')}",
            "epoch train (s)": t, "speed-up": speed,
            "efficiency": speed / r["gpus"] if speed else None,
            "seq/s": r.get("train_sequences_per_s"), "eval (s)": r.get("eval_s"),
            "first epoch (s)": r.get("first_epoch_train_s"), "capture (s)": r.get("time_capture_s"),
            "peak MB (rank 0)": r.get("peak_gpu_mem_mb"), "test Recall@10": r.get("test_recall@10"),
            "wall (s)": r.get("wall_s"), "status": r.get("status"),
            "what ran": r.get("train_step") if r.get("status") == "COMPLETED" else r.get("reason")})
    parts = [f"# Data-parallel scaling ({device})", f"`{command}`",
             "Shape: " + ", ".join(f"{k}={v}" for k, v in shape.items()
                                   if k not in ("wandb_mode", "device", "synthetic")) +
             ". Speed-up: the 1-GPU epoch over this run's (same model); efficiency: speed-up / "
             "GPUs. Epoch train = median of the epochs after the first.",
             markdown(pd.DataFrame(table), SPECS)]
    if equality and "error" in equality:
        parts.append(f"Evaluation of `{equality['run']}`'s best checkpoint in one process "
                     f"failed: {' '.join(equality['error'].split())[-500:]}")
    elif equality:
        c = equality["comparison"]
        parts.append(f"Evaluation of `{equality['run']}`'s best checkpoint in one process against "
                     f"the metrics its {equality['processes']} processes computed: "
                     f"{c['metrics_compared']} metrics, identical: {c['identical']}, max abs diff "
                     f"{c['max_abs_diff']}.")
    return parts


def bundle(out: Path, work: Path, names: list[str]) -> None:
    """runs.tar.gz: the small files of every run (no checkpoints); profiles.md: the profiles."""
    profiles = []
    with tarfile.open(out / "runs.tar.gz", "w:gz") as tar:
        for name in names:
            for f in RUN_FILES:
                if (work / name / f).exists():
                    tar.add(work / name / f, arcname=f"{name}/{f}")
            if (work / name / "profile.txt").exists():
                profiles.append(f"## {name}\n\n```\n{(work / name / 'profile.txt').read_text()}```")
    (out / "profiles.md").write_text("# Profiles (process 0)\n\n" + "\n\n".join(profiles) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scaling")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, help="run directories (default OUT/runs)")
    p.add_argument("--models", nargs="+", default=["sasrec"])
    p.add_argument("--gpus", nargs="+", type=int, default=[1, 2])
    p.add_argument("--variants", nargs="+", choices=tuple(VARIANTS),
                   default=["graph", "overlap", "flat"])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--dataset", default=BASE["dataset"])
    p.add_argument("--no-global-batch", action="store_true")
    p.add_argument("--no-eval-check", action="store_true")
    p.add_argument("--profile", type=int, default=0, metavar="STEPS")
    p.add_argument("--budget-s", type=float, default=None,
                   help="start no run that would not end within this many seconds of the start")
    p.add_argument("--run-timeout-s", type=float, default=float("inf"),
                   help="stop a run (and its processes) after this many seconds")
    p.add_argument("--set", default="{}", help="JSON of cell parameters to override, e.g. a "
                   "small shape and device=cpu for a smoke run on CPU processes (gloo)")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
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
    work = args.work or args.out / "runs"
    args.out.mkdir(parents=True, exist_ok=True)
    csv = args.out / "scaling.csv"
    rows = pd.read_csv(csv).to_dict("records") if csv.exists() else []
    budget = args.budget_s if args.budget_s is not None else float("inf")
    walls: dict[tuple, float] = {}
    equality, names = None, []
    multi = [g for g in args.gpus if g > 1]
    steps = plan(args.models, multi, args.variants) if 1 in args.gpus else \
        [s for s in plan(args.models, multi, args.variants) if s[0] == "eval" or s[1] != 1]
    for step in steps:
        left = budget - (time.perf_counter() - t_start)
        if step[0] == "eval":
            done = [r for r in rows if r.get("gpus", 1) > 1 and r.get("status") == "COMPLETED"
                    and r.get("run") in names]
            if args.no_eval_check or not done or left < ESTIMATE_S["eval"]:
                continue
            run_dir = work / done[0]["run"]
            equality = {"run": done[0]["run"], "processes": done[0]["gpus"], "device": device}
            try:
                one = evaluate_one_process(run_dir, left, "cpu" if cpu else "cuda")
                equality.update(one_process=one, comparison=compare(read_result(run_dir), one))
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                equality["error"] = str(e)[-2000:]
            (args.out / "eval_equality.json").write_text(json.dumps(equality, indent=1))
            print(json.dumps(equality.get("comparison") or equality), flush=True)
            continue
        model, g, variant, batch = step
        if batch == "global":
            variant = None if args.no_global_batch else fastest(rows, model, g)
            if variant is None:
                continue
        per_gpu = overrides.get("batch_size", BASE["batch_size"])
        per_gpu = per_gpu // g if batch == "global" else per_gpu
        name = f"{model}-{g}gpu-{variant}" + ("-global" if batch == "global" else "")
        estimate = walls.get((model, g), ESTIMATE_S.get(model, 90.0) * args.epochs / 2) * \
            (1.5 if batch == "global" else 1.0)      # G times the steps of the per-GPU run
        if left < estimate:
            row = {"run": name, "model": model, "gpus": g, "variant": variant, "batch": batch,
                   "status": "SKIPPED", "reason": f"budget: {left:.0f} s left, ~{estimate:.0f} s"}
        else:
            params = {**BASE, "dataset": args.dataset, "model": model, "num_processes": g,
                      "epochs": args.epochs, "profile_steps": args.profile,
                      **(VARIANTS[variant] if g > 1 else {}), **overrides, "batch_size": per_gpu}
            row = {"run": name, "device": device, "dataset": params["dataset"],
                   "variant": variant, "batch": batch,
                   **run_cell(work / name, params,
                              min(left, 3 * estimate + 60, args.run_timeout_s))}
            walls[(model, g)] = row["wall_s"]
            names.append(name)
        print(json.dumps(row), flush=True)
        rows = [r for r in rows if r.get("run") != name] + [row]
        pd.DataFrame(rows).to_csv(csv, index=False)
    bundle(args.out, work, names)
    command = "python -m benchmarks.scaling " + " ".join(argv if argv is not None else sys.argv[1:])
    shape = {**BASE, "dataset": args.dataset, **overrides}
    print(write(args.out, "scaling", *summary(rows, equality, device, command, shape)))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
