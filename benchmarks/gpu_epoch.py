"""GPU benchmark of the trainer: seconds per training epoch, sequences/s, full-ranking
evaluation time, peak GPU memory and utilisation, each against the floor of the output layer.

Everything runs through the project's own code: `loop.make_accelerator`, `build_model`,
`optim.make_optimizer`, `loop.train_epoch` (the trainer's epoch: the eager loop, or with
`fast_step.for_run` the CUDA-graph step the trainer uses) and `evaluate.evaluate` (the
trainer's full-ranking evaluation of all users). One epoch = every training window once
(`train_windows="all"`: every training interaction a target once).

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
targets x D x items over the measured bf16 matmul rate (median of repeats, 8192^3).
Writes gpu_epoch.csv, gpu_epoch.md, gpu_runs.jsonl, gpu_profiles.txt into --out-dir.
"""
from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

MODELS = ("sasrec", "bert4rec", "gru4rec", "lstm", "xlstm")
SHAPES = {   # dataset -> (max_len, embedding_dim, num_heads); ML-20M: the study's 4 heads
    "synthetic-ml-1m": (200, 64, 2),
    "ml-100k": (200, 64, 2),
    "synthetic-ml-20m": (200, 256, 4),
    "synthetic": (50, 32, 2),
}
TARGETS_S = {"sasrec": 0.10, "bert4rec": 0.15, "gru4rec": 0.15, "lstm": 0.15, "xlstm": 0.40}
EVAL_TARGET_S = 0.03
COLUMNS = ["model", "dataset", "device", "mode", "loss_path", "max_len", "embedding_dim", "batch_size",
           "num_blocks", "train_windows", "steps_per_epoch", "epoch_time_s", "epoch_time_min_s",
           "first_epoch_s", "capture_s", "sequences_per_s", "targets_per_epoch", "eval_time_s",
           "eval_time_b1024_s", "peak_gpu_mem_mb", "eval_peak_gpu_mem_mb", "gpu_util_pct",
           "floor_time_s", "ratio_to_floor", "eval_ratio_to_floor", "train_loss_epochs",
           "val_recall@10", "train_step", "target_s", "met_target"]


# ------------------------------------------------------------------------------ measurements
def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device, n: int = 8192, repeats: int = 20) -> float:
    """FLOP/s of an n^3 bf16 matrix product on random data (CPU: fp32, smaller), median."""
    cuda = torch.device(device).type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    n = n if cuda else 512
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for i in range(repeats + 3):
        sync(device)
        t = time.perf_counter()
        if cuda:
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            a @ b
            e.record()
            e.synchronize()
            dt = s.elapsed_time(e) / 1e3
        else:
            a @ b
            dt = time.perf_counter() - t
        if i >= 3:
            times.append(dt)
    return 2 * n ** 3 / statistics.median(times)


def copy_bandwidth(device, mb: int = 1024, repeats: int = 10) -> float | None:
    """Bytes/s of a device-to-device copy, counting bytes read plus written (median)."""
    if torch.device(device).type != "cuda":
        return None
    x = torch.empty(mb * 2**20, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    times = []
    for i in range(repeats + 2):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        y.copy_(x)
        e.record()
        e.synchronize()
        if i >= 2:
            times.append(s.elapsed_time(e) / 1e3)
    return 2 * x.numel() / statistics.median(times)


class UtilSampler:
    """GPU utilisation (NVML, %) sampled every `period` s in a thread while active."""

    def __init__(self, device, period: float = 0.01):
        self.handle, self.samples, self.period = None, [], period
        self._stop = threading.Event()
        if torch.device(device).type != "cuda":
            return
        try:
            import pynvml
            pynvml.nvmlInit()
            index = torch.device(device).index or 0
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self.nvml = pynvml
        except Exception:
            self.handle = None

    def __enter__(self):
        if self.handle is not None:
            self._stop.clear()
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            try:
                self.samples.append(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)
            except Exception:
                return
            time.sleep(self.period)

    def __exit__(self, *exc):
        if self.handle is not None:
            self._stop.set()
            self.thread.join()

    @property
    def mean(self) -> float | None:
        return float(statistics.mean(self.samples)) if self.samples else None


# ------------------------------------------------------------------------------ one model
def make_cfg(args, model: str, dataset: str, *, graphs: bool, **overrides):
    from recsys_core.train import TrainConfig
    max_len, dim, heads = SHAPES.get(dataset, (200, 64, 2))
    values = dict(model=model, dataset=dataset, out=str(Path(args.work) / f"{dataset}-{model}"),
                  max_len=args.max_len or max_len, embedding_dim=args.embedding_dim or dim,
                  num_blocks=args.num_blocks, num_heads=args.num_heads or heads, batch_size=args.batch_size,
                  train_windows="all", device=args.device, cuda_graphs=graphs,
                  wandb_mode="disabled", data_mirror=args.data_mirror,
                  synthetic=json.loads(args.synthetic) if args.synthetic else {})
    values.update(overrides)
    return TrainConfig(**values)


def build(cfg, data, split, fused_loss: bool = True):
    """What `loop.run` builds for a trainable cell: accelerator, model, optimiser, windows and
    the graph step (None where the trainer runs its eager loop)."""
    from recsys_core.models import build_model
    from recsys_core.train import fast_step
    from recsys_core.train.loop import make_accelerator, seed_everything
    from recsys_core.train.optim import make_optimizer
    acc = make_accelerator(cfg)
    seed_everything(cfg.seed)
    model = build_model(cfg.model, data.n_items, cfg, acc.device.type).to(acc.device)
    graphs = fast_step.graph_unsupported_reason(cfg, acc) is None
    optimizer = make_optimizer(cfg, model, cfg.lr, capturable=graphs)
    model, optimizer = acc.prepare(model, optimizer)
    starts, ends = split.train_windows(cfg.max_len, cfg.train_windows)
    step = fast_step.for_run(cfg, model, optimizer, acc, split, starts, ends,
                             fused_loss=fused_loss)
    return acc, model, optimizer, starts, ends, step


def time_eval(model, split, acc, cfg, batch_size: int, repeats: int) -> tuple[float, dict]:
    from recsys_core.train.evaluate import evaluate, user_loader
    loader = acc.prepare(user_loader(split.n_users, batch_size))
    args = dict(max_len=cfg.max_len, filter_seen=cfg.filter_seen, ks=cfg.ks, loader=loader,
                accelerator=acc)
    metrics = evaluate(model, split, "val", **args)          # warm-up
    times = []
    for _ in range(repeats):
        sync(acc.device)
        t = time.perf_counter()
        metrics = evaluate(model, split, "val", **args)      # ends with host reads: synced
        times.append(time.perf_counter() - t)
    return statistics.median(times), metrics


def run_mode(args, model_name, dataset, mode, data, split_cpu, log) -> dict:
    from recsys_core.train.loop import train_epoch
    cfg = make_cfg(args, model_name, dataset, graphs=mode.startswith("graph"),
                   compile_encoder=(mode == "graph_compiled"))
    device = torch.device("cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available()
                          else "cpu")
    split = split_cpu.to(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    acc, model, optimizer, starts, ends, step = build(cfg, data, split,
                                                      fused_loss=(mode != "graph_plain"))
    if mode.startswith("graph") and step is None:
        raise RuntimeError("graph mode asked for, but the trainer would run eagerly here")
    losses, times = [], []
    sync(device)
    t = time.perf_counter()
    losses.append(train_epoch(cfg, model, optimizer, None, split, starts, ends, 1, acc, step)[0])
    first = time.perf_counter() - t
    with UtilSampler(device) as util:
        for epoch in range(2, args.epochs + 2):
            sync(device)
            t = time.perf_counter()
            loss, _, n_seq = train_epoch(cfg, model, optimizer, None, split, starts, ends,
                                         epoch, acc, step)        # returns after a host read
            times.append(time.perf_counter() - t)
            losses.append(loss)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # All users in one batch where the scores fit ([users x items] <= 400M; ML-20M's are 3.7G:
    # its encoder alone would need ~80 GB at once), else batches of 1,024 (with 4,096 xLSTM's
    # kernels hit an illegal memory access on the H100).
    one_batch = split.n_users if split.n_users * split.n_items <= 400_000_000 else 1024
    eval_all, metrics = time_eval(model, split, acc, cfg, max(one_batch, 1), args.eval_repeats)
    eval_peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    eval_1024, _ = time_eval(model, split, acc, cfg, cfg.eval_batch_size, args.eval_repeats)
    n_targets = int((ends - starts - 1).clamp(min=0).sum())
    row = dict(model=model_name, dataset=dataset, device=device_name(device), mode=mode,
               max_len=cfg.max_len, embedding_dim=cfg.embedding_dim, batch_size=cfg.batch_size,
               num_blocks=cfg.num_blocks, train_windows=cfg.train_windows,
               steps_per_epoch=-(-len(starts) // cfg.batch_size),
               epoch_time_s=statistics.median(times), epoch_time_min_s=min(times),
               first_epoch_s=first, capture_s=getattr(step, "capture_time_s", None),
               sequences_per_s=len(starts) / statistics.median(times), targets_per_epoch=n_targets,
               eval_time_s=eval_all, eval_time_b1024_s=eval_1024, peak_gpu_mem_mb=peak,
               eval_peak_gpu_mem_mb=eval_peak, gpu_util_pct=util.mean,
               train_loss_epochs=" ".join(f"{x:.4f}" for x in losses),
               **{"val_recall@10": metrics.get("val_recall@10")},
               train_step=(step.describe() if step is not None else "eager"),
               n_items=split.n_items, n_users=split.n_users,
               loss_path=getattr(step, "loss_path", "model"),
               fused_check=getattr(step, "fused_check", None))
    log(f"  {mode:5s} epoch {row['epoch_time_s']:.4f} s (first {first:.2f} s) "
        f"eval {eval_all * 1e3:.1f} ms (b1024 {eval_1024 * 1e3:.1f} ms) "
        f"peak {peak or 0:.0f} MB util {util.mean} losses {row['train_loss_epochs']} "
        f"[{row['train_step']}, loss {row['loss_path']} {row['fused_check']}]")
    if mode == args.modes[-1] and mode.startswith("graph") and args.profile and step is not None:
        try:
            row["profile"] = profile_epoch(cfg, model, optimizer, split, starts, ends, acc, step,
                                           args.epochs + 2)
            row["profile"] += "\n" + profile_eval(model, split, acc, cfg)
            log(row["profile"])
        except Exception as e:  # noqa: BLE001 -- the timings stand without it
            row["profile"] = f"profile {dataset} {model_name}: failed: {type(e).__name__}: {e}"
    del model, optimizer, step
    gc.collect()
    return row


def _profiled(run, device) -> tuple[float, dict[str, list]]:
    """Wall time of run() under torch.profiler, and CUDA kernel time and count by name."""
    from torch.profiler import ProfilerActivity, profile
    sync(device)
    t = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run()
        sync(device)
    wall = time.perf_counter() - t
    kernels: dict[str, list] = {}
    for ev in prof.events():
        if getattr(ev, "device_type", None) == torch.autograd.DeviceType.CUDA:
            k = kernels.setdefault(ev.name, [0.0, 0])
            k[0] += ev.device_time if hasattr(ev, "device_time") else ev.cuda_time
            k[1] += 1
    return wall, kernels


def profile_epoch(cfg, model, optimizer, split, starts, ends, acc, step, epoch) -> str:
    """torch.profiler over one epoch: kernel time by name (top 12) and the GPU-busy share."""
    from recsys_core.train.loop import train_epoch
    wall, kernels = _profiled(lambda: train_epoch(cfg, model, optimizer, None, split, starts,
                                                  ends, epoch, acc, step), acc.device)
    total = sum(v[0] for v in kernels.values()) / 1e6
    lines = [f"profile {cfg.dataset} {cfg.model} ({step.describe()}): wall {wall:.4f} s (profiled), "
             f"GPU kernel time {total:.4f} s ({100 * total / max(wall, 1e-9):.0f}% of wall), "
             f"{sum(v[1] for v in kernels.values())} kernels"]
    for name, (us, n) in sorted(kernels.items(), key=lambda kv: -kv[1][0])[:12]:
        lines.append(f"  {us / 1e6:8.4f} s {100 * us / 1e6 / max(total, 1e-12):5.1f}% "
                     f"x{n:<6d} {name[:110]}")
    return "\n".join(lines)


def profile_eval(model, split, acc, cfg) -> str:
    """torch.profiler over one evaluation of all users in one batch: wall vs kernel time."""
    from recsys_core.train.evaluate import evaluate, user_loader
    loader = acc.prepare(user_loader(split.n_users, max(split.n_users, 1)))
    args = dict(max_len=cfg.max_len, filter_seen=cfg.filter_seen, ks=cfg.ks, loader=loader,
                accelerator=acc)
    evaluate(model, split, "val", **args)
    wall, kernels = _profiled(lambda: evaluate(model, split, "val", **args), acc.device)
    total = sum(v[0] for v in kernels.values()) / 1e6
    lines = [f"eval profile {cfg.model} (all users, one batch): wall {wall:.4f} s (profiled), "
             f"GPU kernel time {total:.4f} s, {sum(v[1] for v in kernels.values())} kernels"]
    for name, (us, n) in sorted(kernels.items(), key=lambda kv: -kv[1][0])[:6]:
        lines.append(f"  {us / 1e6:8.4f} s x{n:<5d} {name[:110]}")
    return "\n".join(lines)


def check_graph(args, model_name, dataset, data, split_cpu, log) -> dict:
    """The graph against the same fixed-shape step run eagerly: dropout 0, same seed, same
    batches, one epoch; per-step losses (BERT4Rec's masks are random draws, which differ
    between the two, so its losses agree only in distribution)."""
    from recsys_core.train.fast_step import TrainStep
    device = torch.device("cuda")
    split = split_cpu.to(device)
    out = {}
    compiled = "graph_compiled" in args.modes
    for use_graph in (False, True):
        cfg = make_cfg(args, model_name, dataset, graphs=True, dropout=0.0,
                       compile_encoder=compiled and use_graph)
        acc, model, optimizer, starts, ends, _ = build(cfg, data, split)
        step = TrainStep(cfg, model, optimizer, acc, split, starts, ends, use_graph=use_graph,
                         record_losses=True, fused_loss=use_graph)
        loss, norm, _ = step.run_epoch(1)
        out[use_graph] = dict(losses=step.losses.cpu(), loss=loss, norm=norm,
                              mode=step.describe(), loss_path=step.loss_path,
                              reason=step.fallback_reason,
                              weights=torch.cat([p.detach().float().flatten()
                                                 for p in model.parameters()]).cpu())
        del model, optimizer, step
        gc.collect()
    e, g = out[False], out[True]
    rel = ((g["losses"] - e["losses"]).abs() / e["losses"].abs().clamp(min=1e-6))
    wdiff = float((g["weights"] - e["weights"]).norm() / e["weights"].norm())
    res = dict(model=model_name, dataset=dataset, graph_mode=g["mode"], fallback=g["reason"],
               graph_loss_path=g["loss_path"],
               first_losses_eager=[round(float(x), 4) for x in e["losses"][:6]],
               first_losses_graph=[round(float(x), 4) for x in g["losses"][:6]],
               max_rel_diff_first8=float(rel[:8].max()), max_rel_diff_epoch=float(rel.max()),
               epoch_loss_eager=e["loss"], epoch_loss_graph=g["loss"],
               grad_norm_eager=e["norm"], grad_norm_graph=g["norm"],
               weights_rel_diff_after_epoch=wdiff)
    log(f"  check eager (model loss) vs {g['mode']} ({g['loss_path']}): losses {res['first_losses_eager']} vs "
        f"{res['first_losses_graph']}; max rel diff first 8 steps {res['max_rel_diff_first8']:.2e}, "
        f"epoch {res['max_rel_diff_epoch']:.2e}; epoch loss {e['loss']:.5f} vs {g['loss']:.5f}; "
        f"weights rel diff {wdiff:.2e}" + (f"; fallback: {g['reason']}" if g["reason"] else ""))
    return res


def device_name(device) -> str:
    from recsys_core.telemetry import GpuTelemetry
    return GpuTelemetry.device_name(torch.device(device))


def one_model(args) -> int:
    """Child process: one (dataset, model), all modes; one JSON line appended to --jsonl."""
    from recsys_core.data import LeaveOneOut, load_dataset
    model_name, dataset = args.one
    log = lambda m: print(f"[{dataset} {model_name}] {m}", flush=True)  # noqa: E731
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
            row = dict(model=model_name, dataset=dataset, mode=mode, error=f"{type(e).__name__}: {e}"[:500])
        with open(args.jsonl, "a") as f:
            f.write(json.dumps({"kind": "run", **row}) + "\n")
    if cuda and args.check and any(m.startswith("graph") for m in args.modes):
        try:
            res = check_graph(args, model_name, dataset, data, split, log)
        except Exception as e:  # noqa: BLE001
            import traceback
            traceback.print_exc()
            res = dict(model=model_name, dataset=dataset, error=f"{type(e).__name__}: {e}"[:500])
        with open(args.jsonl, "a") as f:
            f.write(json.dumps({"kind": "check", **res}) + "\n")
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
    p.add_argument("--synthetic", default=None, help="JSON SyntheticSpec overrides")
    p.add_argument("--data-mirror", default=None)
    p.add_argument("--no-check", dest="check", action="store_false")
    p.add_argument("--no-profile", dest="profile", action="store_false")
    p.add_argument("--timeout", type=int, default=240, help="seconds per (dataset, model)")
    p.add_argument("--out-dir", default="results/benchmarks")
    p.add_argument("--work", default="/tmp/recsys-bench")
    p.add_argument("--one", nargs=2, metavar=("MODEL", "DATASET"), help=argparse.SUPPRESS)
    p.add_argument("--jsonl", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def fmt(v, digits=4):
    if v is None or v == "":
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.one:
        return one_model(args)
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
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    from recsys_core.data import load_dataset
    for dataset in args.datasets:
        t = time.perf_counter()
        load_dataset(dataset, mirror=args.data_mirror,
                     synthetic=json.loads(args.synthetic) if args.synthetic else None)
        print(f"{dataset}: loaded (generated/cached) in {time.perf_counter() - t:.1f} s", flush=True)
        for model in args.models:
            cmd = [sys.executable, "-m", "benchmarks.gpu_epoch", "--one", model, dataset,
                   "--jsonl", str(jsonl)] + [a for a in (argv if argv is not None else sys.argv[1:])]
            t = time.perf_counter()
            try:
                rc = subprocess.run(cmd, env=env, timeout=args.timeout).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
            print(f"[{dataset} {model}] done in {time.perf_counter() - t:.1f} s (rc {rc})", flush=True)
            if rc != 0:
                with open(jsonl, "a") as f:
                    f.write(json.dumps({"kind": "run", "model": model, "dataset": dataset,
                                        "mode": "?", "error": f"child rc {rc}"}) + "\n")
    write_outputs(out, jsonl, rate, bw)
    return 0


def write_outputs(out: Path, jsonl: Path, rate: float, bw: float | None) -> None:
    records = [json.loads(line) for line in jsonl.read_text().splitlines()] if jsonl.exists() else []
    runs = [r for r in records if r["kind"] == "run"]
    checks = [r for r in records if r["kind"] == "check"]
    rows = []
    for r in runs:
        if "error" in r:
            rows.append({k: r.get(k) for k in ("model", "dataset", "mode")} |
                        {"train_step": f"ERROR {r['error']}"})
            continue
        floor = 6 * r["targets_per_epoch"] * r["embedding_dim"] * r["n_items"] / rate
        eval_floor = 2 * r["n_users"] * r["embedding_dim"] * r["n_items"] / rate
        target = TARGETS_S.get(r["model"]) if r["dataset"] == "synthetic-ml-1m" else None
        rows.append({**r, "floor_time_s": floor, "ratio_to_floor": r["epoch_time_s"] / floor,
                     "eval_ratio_to_floor": r["eval_time_s"] / eval_floor, "target_s": target,
                     "met_target": (r["epoch_time_s"] <= target) if target else None})
    with open(out / "gpu_epoch.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in COLUMNS})
    profiles = "\n\n".join(r["profile"] for r in runs if r.get("profile"))
    (out / "gpu_profiles.txt").write_text(profiles + "\n")
    head = ["model", "dataset", "mode", "epoch (s)", "target (s)", "seq/s", "× floor",
            "eval all users (s)", "eval b1024 (s)", "peak train MB", "GPU util %", "train step"]
    md = [f"# GPU epoch benchmark ({runs[0].get('device') if runs else '?'})", "",
          f"bf16 matmul {rate / 1e12:.0f} TFLOP/s, D2D copy {(bw or 0) / 1e12:.2f} TB/s "
          "(measured in the same run). Floor = 6 × targets × D × items / matmul rate. "
          "Epoch = every training window once (train_windows=all), batch 128; median of the "
          "timed epochs after one warm-up epoch (which includes the capture).", "",
          "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        md.append("| " + " | ".join(fmt(x) for x in (
            r.get("model"), r.get("dataset"), r.get("mode"), r.get("epoch_time_s"),
            r.get("target_s"), r.get("sequences_per_s"), r.get("ratio_to_floor"),
            r.get("eval_time_s"), r.get("eval_time_b1024_s"), r.get("peak_gpu_mem_mb"),
            r.get("gpu_util_pct"), f"{r.get('train_step')}, loss {r.get('loss_path')}")) + " |")
    if checks:
        md += ["", "## Graph (fused loss) vs the same step run eagerly with the model's loss (dropout 0, one epoch, same seed)", "",
               "| model | graph | max rel. loss diff, first 8 steps | whole epoch | epoch loss eager / graph | weights rel. diff |",
               "|---|---|---|---|---|---|"]
        for c in checks:
            if "error" in c:
                md.append(f"| {c['model']} | ERROR {c['error']} | | | | |")
                continue
            md.append(f"| {c['model']} | {c['graph_mode']}, {c.get('graph_loss_path')} | "
                      f"{c['max_rel_diff_first8']:.1e} | "
                      f"{c['max_rel_diff_epoch']:.1e} | {c['epoch_loss_eager']:.4f} / "
                      f"{c['epoch_loss_graph']:.4f} | {c['weights_rel_diff_after_epoch']:.1e} |")
    (out / "gpu_epoch.md").write_text("\n".join(md) + "\n")
    print("\n".join(md), flush=True)


if __name__ == "__main__":
    sys.exit(main())
