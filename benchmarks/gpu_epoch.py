"""GPU benchmark of the trainer: seconds per training epoch, sequences/s, full-ranking
evaluation time, peak GPU memory and utilisation, each against the floor of the output layer.

Everything runs through the project's own code: each run is set up by the trainer's own
`recsys_core.train.setup.build_run` (run_setup.py), then timed through `loop.train_epoch` (the
trainer's epoch: the eager loop, or the CUDA-graph step of `step_choice.build_train_step`) and
`evaluate.evaluate` (the trainer's full-ranking evaluation of all users). One epoch =
every training window once (`train_windows="all"`: every training interaction a target once).
GPU utilisation: NVML read every 10 ms during the timed epochs (GpuTelemetry.sampler).

    python -m benchmarks.gpu_epoch --out-dir results/benchmarks            # all models, ML-1M shape
    python -m benchmarks.gpu_epoch --device cpu --datasets synthetic --max-len 20 \\
        --embedding-dim 16 --epochs 1 --out-dir /tmp/bench                       # CPU smoke test

Each (dataset, model) runs in its own process (a crash or a hung kernel in one model leaves
the others' results; a timeout per model). Per model: `--modes` (eager = the trainer's loop
without graphs, graph = the CUDA-graph step, graph_compiled = that step with the encoder
compiled), 1 warm-up epoch (includes capture and any compile) and
`--epochs` timed epochs (median), the evaluation at the configured batch (1024) and at one
batch of all users (median of `--eval-repeats`), a step-by-step check of the graph against the
same step run eagerly (dropout 0, same seed: per-step losses; the compiled step where
graph_compiled is asked for), and a torch.profiler summary of one epoch of the last graph mode
(top kernels). The floor: 3 passes (forward, two backward matmuls) x 2 FLOPs x
targets x D x items over the measured bf16 matmul rate (median of repeats, 8192^3). The floor
and the profiles: gpu_profile.py; the check: graph_check.py.

The Mamba models' backends (models/ssm.py): `--mamba-backends mambapy triton` runs each Mamba
model once per backend named (RECSYS_MAMBA_BACKEND in its process; default: the automatic
choice, once), adds a table of their epoch and evaluation times side by side, and checks the
triton scan against mambapy's on the GPU at the run's shape (scan_check.py: y and every
gradient, in fp32 and under bf16 autocast; the scan's own times):

    python -m benchmarks.gpu_epoch --models mamba4rec sasmamba --mamba-backends mambapy triton \\
        --out-dir $OUT

GRU4Rec's GRU trains through the project's own backward where its layers allow it
(`--rnn-dropout torch`, or one block: models/gru_backward.py); RECSYS_GRU_BACKWARD=cudnn
keeps cuDNN's, and the `gru_backward` column says which ran.

Writes gpu_epoch.csv, gpu_epoch.md, gpu_runs.jsonl, gpu_profiles.txt (and with triton among
the Mamba backends scan_check.csv, scan_check.md) into --out-dir.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch

from benchmarks.gpu_profile import copy_bandwidth, matmul_rate, profile_epoch, profile_eval
from benchmarks.graph_check import check_graph
from benchmarks.report import write
from benchmarks.run_setup import Run, evaluator, setup_run, train
from benchmarks.timing import timed
from recsys_core.data import LeaveOneOut, load_dataset
from recsys_core.models import RNN_DROPOUTS
from recsys_core.models.ssm import BACKEND_ENV, BACKENDS
from recsys_core.telemetry import GpuTelemetry
from recsys_core.train import TrainConfig

MODELS = ("sasrec", "bert4rec", "gru4rec", "lstm", "xlstm", "mamba4rec", "sasmamba")
MAMBA = ("mamba4rec", "sasmamba")
SHAPES = {   # dataset -> (max_len, embedding_dim, num_heads); ML-20M: the study's 4 heads
    "synthetic-ml-1m": (200, 64, 2),
    "ml-100k": (200, 64, 2),
    "synthetic-ml-20m": (200, 256, 4),
    "synthetic": (50, 32, 2),
}
# The Mamba models have none until a first measurement says what their backend can do.
TARGETS_S = {"sasrec": 0.10, "bert4rec": 0.15, "gru4rec": 0.15, "lstm": 0.15, "xlstm": 0.40}
EVAL_TARGET_S = 0.03
COLUMNS = ["model", "dataset", "device", "mode", "mamba_backend", "rnn_dropout", "gru_backward",
           "loss_path", "max_len", "embedding_dim", "batch_size", "num_blocks", "train_windows", "steps_per_epoch",
           "epoch_time_s", "epoch_time_min_s", "first_epoch_s", "capture_s", "sequences_per_s",
           "targets_per_epoch", "eval_time_s", "eval_time_b1024_s", "peak_gpu_mem_mb",
           "eval_peak_gpu_mem_mb", "gpu_util_pct", "floor_time_s", "ratio_to_floor",
           "eval_ratio_to_floor", "train_loss_epochs", "val_recall@10", "train_step", "target_s",
           "met_target"]


# ------------------------------------------------------------------------------ one model
def make_cfg(args, model: str, dataset: str, *, graphs: bool, **overrides) -> TrainConfig:
    max_len, dim, heads = SHAPES.get(dataset, (200, 64, 2))
    values = dict(model=model, dataset=dataset, out=str(Path(args.work) / f"{dataset}-{model}"),
                  max_len=args.max_len or max_len, embedding_dim=args.embedding_dim or dim,
                  num_blocks=args.num_blocks, num_heads=args.num_heads or heads, batch_size=args.batch_size,
                  train_windows="all", device=args.device, cuda_graphs=graphs,
                  rnn_dropout=args.rnn_dropout,
                  wandb_mode="disabled", data_mirror=args.data_mirror,
                  synthetic=json.loads(args.synthetic) if args.synthetic else {})
    values.update(overrides)
    return TrainConfig(**values)


def time_eval(run: Run, batch_size: int, repeats: int) -> tuple[float, dict]:
    """Median seconds of the trainer's evaluation at `batch_size` after one warm-up, metrics."""
    evaluate = evaluator(run, batch_size)
    metrics = evaluate()
    times = [timed(evaluate, run.accelerator.device)[0] for _ in range(repeats)]
    return statistics.median(times), metrics


def run_mode(args, model_name, dataset, mode, data, split_cpu, log) -> dict:
    cfg = make_cfg(args, model_name, dataset, graphs=mode.startswith("graph"),
                   compile_encoder=(mode == "graph_compiled"))
    device = torch.device("cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available()
                          else "cpu")
    split = split_cpu.to(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    run = setup_run(cfg, data, split, fused_loss=(mode != "graph_plain"))
    step, starts, ends = run.train_step, run.starts, run.ends
    if mode.startswith("graph") and step is None:
        raise RuntimeError("graph mode asked for, but the trainer would run eagerly here")
    first, (loss, _, _) = timed(lambda: train(run, 1), device)
    losses, times = [loss], []
    with GpuTelemetry(device).sampler() as telemetry:
        for epoch in range(2, args.epochs + 2):
            seconds, (loss, _, _) = timed(lambda: train(run, epoch), device)
            times.append(seconds)
            losses.append(loss)
    util = telemetry.mean("gpu_util_pct")
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # All users in one batch where the scores fit ([users x items] <= 400M; ML-20M's are 3.7G:
    # its encoder alone would need ~80 GB at once), else batches of 1,024 (with 4,096 xLSTM's
    # kernels hit an illegal memory access on the H100).
    one_batch = split.n_users if split.n_users * split.n_items <= 400_000_000 else 1024
    eval_all, metrics = time_eval(run, max(one_batch, 1), args.eval_repeats)
    eval_peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    eval_1024, _ = time_eval(run, cfg.eval_batch_size, args.eval_repeats)
    n_targets = int((ends - starts - 1).clamp(min=0).sum())
    row = dict(model=model_name, dataset=dataset, device=device_name(device), mode=mode,
               max_len=cfg.max_len, embedding_dim=cfg.embedding_dim, batch_size=cfg.batch_size,
               num_blocks=cfg.num_blocks, train_windows=cfg.train_windows,
               steps_per_epoch=-(-len(starts) // cfg.batch_size),
               epoch_time_s=statistics.median(times), epoch_time_min_s=min(times),
               first_epoch_s=first, capture_s=getattr(step, "capture_time_s", None),
               sequences_per_s=len(starts) / statistics.median(times), targets_per_epoch=n_targets,
               eval_time_s=eval_all, eval_time_b1024_s=eval_1024, peak_gpu_mem_mb=peak,
               eval_peak_gpu_mem_mb=eval_peak, gpu_util_pct=util,
               train_loss_epochs=" ".join(f"{x:.4f}" for x in losses),
               **{"val_recall@10": metrics.get("val_recall@10")},
               train_step=(step.describe() if step is not None else "eager"),
               n_items=split.n_items, n_users=split.n_users,
               loss_path=getattr(step, "loss_path", "model"),
               fused_check=getattr(step, "fused_check", None),
               mamba_backend=run.info.get("mamba_backend"), rnn_dropout=args.rnn_dropout,
               gru_backward=run.info.get("gru_backward"))
    log(f"  {mode:5s} epoch {row['epoch_time_s']:.4f} s (first {first:.2f} s) "
        f"eval {eval_all * 1e3:.1f} ms (b1024 {eval_1024 * 1e3:.1f} ms) "
        f"peak {peak or 0:.0f} MB util {util} losses {row['train_loss_epochs']} "
        f"[{row['train_step']}, loss {row['loss_path']} {row['fused_check']}]")
    if mode == args.modes[-1] and mode.startswith("graph") and args.profile and step is not None:
        try:
            row["profile"] = profile_epoch(run, args.epochs + 2) + "\n" + profile_eval(run)
            log(row["profile"])
        except Exception as e:  # noqa: BLE001 -- the timings stand without it
            row["profile"] = f"profile {dataset} {model_name}: failed: {type(e).__name__}: {e}"
    return row


def device_name(device) -> str:
    return GpuTelemetry.device_name(torch.device(device))


def one_model(args) -> int:
    """Child process: one (dataset, model), all modes, the Mamba backend RECSYS_MAMBA_BACKEND
    says where set; one JSON line per mode and one per check appended to --jsonl."""
    model_name, dataset = args.one
    backend = os.environ.get(BACKEND_ENV) if model_name in MAMBA else None
    name = f"{model_name} {backend}" if backend else model_name
    log = lambda m: print(f"[{dataset} {name}] {m}", flush=True)  # noqa: E731
    cfg = make_cfg(args, model_name, dataset, graphs=False)
    data = load_dataset(dataset, min_user_interactions=cfg.min_user_interactions,
                        mirror=cfg.data_mirror, synthetic=cfg.synthetic or None)
    split = LeaveOneOut.from_data(data, "cpu")
    cuda = torch.cuda.is_available() and args.device != "cpu"
    for mode in args.modes:
        if mode.startswith("graph") and not cuda:
            log("  graph: skipped (no CUDA)")
            continue
        try:
            row = run_mode(args, model_name, dataset, mode, data, split, log)
        except Exception as e:  # noqa: BLE001 -- record and go on with the next mode
            import traceback
            traceback.print_exc()
            row = dict(model=model_name, dataset=dataset, mode=mode, mamba_backend=backend,
                       error=f"{type(e).__name__}: {e}"[:500])
        gc.collect()       # the mode's model and graphs, before the next mode's
        with open(args.jsonl, "a") as f:
            f.write(json.dumps({"kind": "run", **row}) + "\n")
    if cuda and args.check and any(m.startswith("graph") for m in args.modes):
        try:
            def check_cfg(use_graph: bool) -> TrainConfig:
                return make_cfg(args, model_name, dataset, graphs=True, dropout=0.0,
                                compile_encoder="graph_compiled" in args.modes and use_graph)
            res = check_graph(check_cfg, data, split, log)
        except Exception as e:  # noqa: BLE001
            import traceback
            traceback.print_exc()
            res = dict(model=model_name, dataset=dataset, error=f"{type(e).__name__}: {e}"[:500])
        with open(args.jsonl, "a") as f:
            f.write(json.dumps({"kind": "check", **res, "mamba_backend": backend}) + "\n")
    return 0


def one_scan_check(args) -> int:
    """Child process: the triton scan against mambapy's at the dataset's Mamba layer shape
    (batch rows, max_len, expand x D, d_state); one JSON line per precision."""
    from benchmarks.scan_check import check_scan    # imports triton: only where it is asked for
    cfg = make_cfg(args, "mamba4rec", args.scan_check, graphs=False)
    device = "cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    try:
        rows = check_scan(cfg.batch_size, cfg.max_len, cfg.embedding_dim, cfg.d_state,
                          cfg.expand, device, repeats=args.eval_repeats)
    except Exception as e:  # noqa: BLE001 -- recorded; the epoch timings stand without it
        import traceback
        traceback.print_exc()
        rows = [dict(error=f"{type(e).__name__}: {e}"[:500])]
    with open(args.jsonl, "a") as f:
        for row in rows:
            print(f"[{args.scan_check} scan check] {row}", flush=True)
            f.write(json.dumps({"kind": "scan", "dataset": args.scan_check, **row}) + "\n")
    return 0


# ------------------------------------------------------------------------------ orchestration
def parse(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_epoch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--datasets", nargs="+", default=["synthetic-ml-1m"])
    p.add_argument("--modes", nargs="+", default=["eager", "graph_plain", "graph"],
                   choices=["eager", "graph_plain", "graph", "graph_compiled"],
                   help="eager: the trainer's loop without graphs; graph_plain: the CUDA-graph "
                        "step with the model's own loss; graph: the CUDA-graph step with the "
                        "fused loss (what the trainer runs); graph_compiled: that step with "
                        "the encoder compiled (compile_encoder: true). The last graph mode is "
                        "profiled; with graph_compiled the check compares it")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    p.add_argument("--epochs", type=int, default=3, help="timed epochs after one warm-up epoch")
    p.add_argument("--eval-repeats", type=int, default=3)
    p.add_argument("--max-len", type=int, default=None, help="default: per dataset (200)")
    p.add_argument("--embedding-dim", type=int, default=None, help="default: 64 (ML-20M 256)")
    p.add_argument("--num-blocks", type=int, default=2)
    p.add_argument("--num-heads", type=int, default=None, help="default: per dataset (2; ML-20M 4)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rnn-dropout", default="cudnn", choices=RNN_DROPOUTS,
                   help="GRU4Rec/LSTM: cuDNN's dropout between layers or torch's (resumable)")
    p.add_argument("--synthetic", default=None, help="JSON SyntheticSpec overrides")
    p.add_argument("--data-mirror", default=None)
    p.add_argument("--no-check", dest="check", action="store_false")
    p.add_argument("--no-profile", dest="profile", action="store_false")
    p.add_argument("--mamba-backends", nargs="+", default=None, choices=BACKENDS,
                   help="run each Mamba model once per backend (RECSYS_MAMBA_BACKEND); with "
                        "triton among them also the scan check against mambapy (scan_check.py). "
                        "Default: the automatic choice (models/ssm.py), once")
    p.add_argument("--timeout", type=int, default=240,
                   help="seconds per (dataset, model, Mamba backend)")
    p.add_argument("--out-dir", default="results/benchmarks")
    p.add_argument("--work", default="/tmp/recsys-bench")
    p.add_argument("--one", nargs=2, metavar=("MODEL", "DATASET"), help=argparse.SUPPRESS)
    p.add_argument("--scan-check", metavar="DATASET", help=argparse.SUPPRESS)
    p.add_argument("--jsonl", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def child(cmd: list[str], env: dict, timeout: float) -> int | str:
    """Exit code of one (dataset, model) process; "timeout" where it ran out of time."""
    try:
        return subprocess.run(cmd, env=env, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        return "timeout"


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.one:
        return one_model(args)
    if args.scan_check:
        return one_scan_check(args)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / "gpu_runs.jsonl"
    jsonl.unlink(missing_ok=True)
    device = torch.device("cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available()
                          else "cpu")
    print(f"device: {device_name(device)}; torch {torch.__version__}", flush=True)
    rate = matmul_rate(device)
    bw = copy_bandwidth(device)
    print(f"bf16 matmul 8192^3: {rate / 1e12:.1f} TFLOP/s; D2D copy: "
          f"{(bw or 0) / 1e12:.2f} TB/s (read+write)", flush=True)
    for dataset in args.datasets:
        seconds, _ = timed(lambda: load_dataset(
            dataset, mirror=args.data_mirror,
            synthetic=json.loads(args.synthetic) if args.synthetic else None))
        print(f"{dataset}: loaded (generated/cached) in {seconds:.1f} s", flush=True)
        for model in args.models:
            for backend in (args.mamba_backends or [None]) if model in MAMBA else [None]:
                label = f"{dataset} {model}" + (f" {backend}" if backend else "")
                run_child(["--one", model, dataset], label, args, argv, jsonl, backend,
                          {"kind": "run", "model": model, "dataset": dataset, "mode": "?",
                           "mamba_backend": backend})
        if args.check and "triton" in (args.mamba_backends or []) and set(args.models) & set(MAMBA):
            run_child(["--scan-check", dataset], f"{dataset} scan check", args, argv, jsonl, None,
                      {"kind": "scan", "dataset": dataset})
    write_outputs(out, jsonl, rate, bw)
    return 0


def run_child(what: list[str], label: str, args, argv, jsonl: Path, backend: str | None,
              failed: dict) -> None:
    """One child process (`what`: --one MODEL DATASET or --scan-check DATASET), the Mamba
    backend in its environment where given; `failed` (with the error) recorded if it fails."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **({BACKEND_ENV: backend} if backend else {})}
    cmd = [sys.executable, "-m", "benchmarks.gpu_epoch", *what, "--jsonl", str(jsonl),
           *(argv if argv is not None else sys.argv[1:])]
    seconds, rc = timed(lambda: child(cmd, env, args.timeout))
    print(f"[{label}] done in {seconds:.1f} s (rc {rc})", flush=True)
    if rc != 0:
        with open(jsonl, "a") as f:
            f.write(json.dumps({**failed, "error": f"child rc {rc}"}) + "\n")


CHECK_TITLE = ("## Graph (fused loss) vs the same step run eagerly with the model's loss "
               "(dropout 0, one epoch, same seed)")


def write_outputs(out: Path, jsonl: Path, rate: float, bw: float | None) -> None:
    records = [json.loads(line) for line in jsonl.read_text().splitlines()] if jsonl.exists() else []
    runs = [r for r in records if r["kind"] == "run"]
    checks = [r for r in records if r["kind"] == "check"]
    scans = [r for r in records if r["kind"] == "scan"]
    rows = []
    for r in runs:
        if "error" in r:
            rows.append({k: r.get(k) for k in ("model", "dataset", "mode", "mamba_backend")} |
                        {"train_step": f"ERROR {r['error']}"})
            continue
        floor = 6 * r["targets_per_epoch"] * r["embedding_dim"] * r["n_items"] / rate
        eval_floor = 2 * r["n_users"] * r["embedding_dim"] * r["n_items"] / rate
        target = TARGETS_S.get(r["model"]) if r["dataset"] == "synthetic-ml-1m" else None
        rows.append({**r, "floor_time_s": floor, "ratio_to_floor": r["epoch_time_s"] / floor,
                     "eval_ratio_to_floor": r["eval_time_s"] / eval_floor, "target_s": target,
                     "met_target": (r["epoch_time_s"] <= target) if target else None})
    profiles = "\n\n".join(r["profile"] for r in runs if r.get("profile"))
    (out / "gpu_profiles.txt").write_text(profiles + "\n")
    table = pd.DataFrame([{
        "model": r.get("model"), "dataset": r.get("dataset"), "mode": r.get("mode"),
        "Mamba backend": r.get("mamba_backend"), "epoch (s)": r.get("epoch_time_s"),
        "target (s)": r.get("target_s"), "seq/s": r.get("sequences_per_s"),
        "× floor": r.get("ratio_to_floor"),
        "eval all users (s)": r.get("eval_time_s"), "eval b1024 (s)": r.get("eval_time_b1024_s"),
        "peak train MB": r.get("peak_gpu_mem_mb"), "GPU util %": r.get("gpu_util_pct"),
        "train step": f"{r.get('train_step')}, loss {r.get('loss_path')}"} for r in rows],
        dtype=object)
    parts = [f"# GPU epoch benchmark ({runs[0].get('device') if runs else '?'})",
             f"bf16 matmul {rate / 1e12:.0f} TFLOP/s, D2D copy {(bw or 0) / 1e12:.2f} TB/s "
             "(measured in the same run). Floor = 6 × targets × D × items / matmul rate. "
             "Epoch = every training window once (train_windows=all), batch 128; median of the "
             "timed epochs after one warm-up epoch (which includes the capture).", table]
    if (backends := backend_table(rows)) is not None:
        parts += [BACKENDS_TITLE, backends]
    if scans:
        scan_parts = [SCAN_TITLE, scan_table(scans)]
        write(out, "scan_check", *scan_parts, data=pd.DataFrame(scans).drop(columns="kind"))
        parts += scan_parts
    if checks:
        parts += [CHECK_TITLE, pd.DataFrame([check_row(c) for c in checks])]
    text = write(out, "gpu_epoch", *parts, data=pd.DataFrame(rows, columns=COLUMNS))
    print(text, end="", flush=True)


BACKENDS_TITLE = ("## Mamba backends side by side (speed-up: mambapy's time over the backend's; "
                  "losses: each epoch's mean, same seed)")
SCAN_TITLE = ("## The triton scan against mambapy's on this device (scan_check.py): max |triton "
              "- mambapy| / max |mambapy| of y and each gradient; the scan alone, median ms")


def backend_table(rows: list[dict]) -> pd.DataFrame | None:
    """One row per Mamba run where a (model, dataset, mode) ran with mambapy and another
    backend; None where none did."""
    runs: dict[tuple, dict] = {}
    for r in rows:
        if r.get("mamba_backend") and r.get("epoch_time_s"):
            runs.setdefault((r["model"], r["dataset"], r["mode"]), {})[r["mamba_backend"]] = r
    out = []
    for (model, dataset, mode), by_backend in runs.items():
        base = by_backend.get("mambapy")
        if base is None or len(by_backend) < 2:
            continue
        for backend, r in by_backend.items():
            out.append({"model": model, "dataset": dataset, "mode": mode, "backend": backend,
                        "epoch (s)": r["epoch_time_s"],
                        "epoch speed-up": base["epoch_time_s"] / r["epoch_time_s"],
                        "eval all users (s)": r["eval_time_s"],
                        "eval speed-up": base["eval_time_s"] / r["eval_time_s"],
                        "peak train MB": r["peak_gpu_mem_mb"],
                        "peak eval MB": r["eval_peak_gpu_mem_mb"],
                        "epoch losses": r["train_loss_epochs"],
                        "val recall@10": r["val_recall@10"]})
    return pd.DataFrame(out, dtype=object) if out else None


def scan_table(scans: list[dict]) -> pd.DataFrame:
    from benchmarks.scan_check import GRADS

    def row(c: dict) -> dict:
        if "error" in c:
            return {"dataset": c["dataset"], "precision": f"ERROR {c['error']}"}
        ms = {f"{b} {what} (ms)": c[f"{b}_{key}"] * 1e3 for what, key in
              (("fwd", "forward_s"), ("fwd+bwd", "forward_backward_s"))
              for b in ("mambapy", "triton")}
        peaks = {f"{b} fwd+bwd peak MB": c.get(f"{b}_peak_mb") for b in ("mambapy", "triton")}
        return {"dataset": c["dataset"], "precision": c["precision"],
                "rows × L × ED × N": f"{c['rows']} × {c['L']} × {c['ED']} × {c['N']}",
                **{k: f"{c[k]:.1e}" for k in ("y", "y_no_grad", *GRADS)}, **ms, **peaks}
    return pd.DataFrame([row(c) for c in scans], dtype=object)


def check_row(c: dict) -> dict:
    """A graph check's row of gpu_epoch.md, its figures as text."""
    if "error" in c:
        return {"model": c["model"], "graph": f"ERROR {c['error']}",
                "max rel. loss diff, first 8 steps": "", "whole epoch": "",
                "epoch loss eager / graph": "", "weights rel. diff": ""}
    model = c["model"] + (f" ({c['mamba_backend']})" if c.get("mamba_backend") else "")
    return {"model": model, "graph": f"{c['graph_mode']}, {c.get('graph_loss_path')}",
            "max rel. loss diff, first 8 steps": f"{c['max_rel_diff_first8']:.1e}",
            "whole epoch": f"{c['max_rel_diff_epoch']:.1e}",
            "epoch loss eager / graph": f"{c['epoch_loss_eager']:.4f} / {c['epoch_loss_graph']:.4f}",
            "weights rel. diff": f"{c['weights_rel_diff_after_epoch']:.1e}"}


if __name__ == "__main__":
    sys.exit(main())
