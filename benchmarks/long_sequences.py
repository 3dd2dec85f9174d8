"""Long sequences: seconds and peak GPU memory per training epoch at max_len 512, 1,024 and
2,048 for the state-space models (mamba4rec, sasmamba) against SASRec's quadratic attention
and xLSTM's chunkwise mLSTM, on one synthetic data set whose users have ~2,048 interactions
on average (the seed paper, Alokam's MambaRec, trains at 200-5,000 items: its README).

Each row is one (model, max_len), set up as the trainer sets it up (run_setup.setup_run: the
CUDA-graph step on one GPU, bf16 autocast; the eager loop on the CPU) and timed through the
trainer's epoch: one warm-up epoch (capture included), then `--epochs` timed epochs (median).
An epoch is every training window once (train_windows=all), so every length trains the same
targets: only the window length, hence the padding and the per-step work, changes. Peak
memory: torch.cuda.max_memory_allocated over the warm-up and timed epochs (CUDA only). A row
that runs out of memory is recorded as OOM and the next row goes on.

    python -m benchmarks.long_sequences --out-dir results/benchmarks/long_sequences  # one GPU
    python -m benchmarks.long_sequences --device cpu --out-dir /tmp/long  # smoke, tiny, < 1 min

Writes long_sequences.csv and long_sequences.md (which names the device) into --out-dir.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
from pathlib import Path

import pandas as pd
import torch

from benchmarks.report import cell, write
from benchmarks.run_setup import setup_run, train
from benchmarks.timing import timed
from recsys_core.data import LeaveOneOut, load_dataset
from recsys_core.telemetry import GpuTelemetry
from recsys_core.train import TrainConfig

MODELS = ("mamba4rec", "sasmamba", "sasrec", "xlstm")
# Defaults per device: the GPU sizes, and the CPU smoke test's tiny ones.
SIZES = {"cuda": dict(lengths=[512, 1024, 2048], embedding_dim=64, batch_size=64, users=512,
                      items=10_000),
         "cpu": dict(lengths=[16, 32, 64], embedding_dim=16, batch_size=8, users=16, items=100)}
COLUMNS = ["model", "max_len", "status", "epoch_time_s", "first_epoch_s", "sequences_per_s",
           "targets_per_s", "peak_gpu_mem_mb", "steps_per_epoch", "targets_per_epoch",
           "batch_size", "embedding_dim", "num_blocks", "train_step", "mamba_backend", "device"]


def out_of_memory(error: Exception) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error) \
        or "can't allocate memory" in str(error)


def one_row(args, model: str, max_len: int, data, split, device: torch.device) -> dict:
    cfg = TrainConfig(model=model, dataset="synthetic", synthetic=args.spec, max_len=max_len,
                      embedding_dim=args.embedding_dim, num_heads=args.num_heads,
                      num_blocks=args.num_blocks, batch_size=args.batch_size,
                      train_windows="all", device=device.type, cuda_graphs=args.graphs,
                      wandb_mode="disabled", out=str(Path(args.work) / f"{model}-{max_len}"))
    run = setup_run(cfg, data, split)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    first, _ = timed(lambda: train(run, 1), device)
    times = [timed(lambda: train(run, epoch), device)[0] for epoch in range(2, args.epochs + 2)]
    seconds = statistics.median(times)
    n_targets = int((run.ends - run.starts - 1).clamp(min=0).sum())
    return dict(status="ok", epoch_time_s=seconds, first_epoch_s=first,
                sequences_per_s=len(run.starts) / seconds, targets_per_s=n_targets / seconds,
                peak_gpu_mem_mb=torch.cuda.max_memory_allocated(device) / 2**20
                if device.type == "cuda" else None,
                steps_per_epoch=-(-len(run.starts) // cfg.batch_size), targets_per_epoch=n_targets,
                train_step=run.train_step.describe() if run.train_step is not None else "eager",
                mamba_backend=run.info.get("mamba_backend"))


def measure(args, model: str, max_len: int, data, split, device: torch.device) -> dict:
    """One row, whatever happens: its figures, or OOM, or the error."""
    row = dict(model=model, max_len=max_len, batch_size=args.batch_size,
               embedding_dim=args.embedding_dim, num_blocks=args.num_blocks,
               device=GpuTelemetry.device_name(device))
    try:
        row.update(one_row(args, model, max_len, data, split, device))
    except Exception as e:  # noqa: BLE001 -- record the row and go on with the next
        row["status"] = "OOM" if out_of_memory(e) else f"error: {type(e).__name__}: {e}"[:300]
    gc.collect()            # the row's model, optimiser and graph before the next row's
    if device.type == "cuda":
        torch.cuda.empty_cache()
    print(f"[{model} L={max_len}] {row['status']} epoch {cell(row.get('epoch_time_s'))} s, "
          f"peak {cell(row.get('peak_gpu_mem_mb'))} MB [{cell(row.get('train_step'))}]",
          flush=True)
    return row


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.long_sequences", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--lengths", nargs="+", type=int, default=None,
                   help="max_len values (default: 512 1024 2048 on CUDA, 16 32 64 on the CPU)")
    p.add_argument("--embedding-dim", type=int, default=None, help="default: 64 (CPU 16)")
    p.add_argument("--batch-size", type=int, default=None, help="default: 64 (CPU 8)")
    p.add_argument("--users", type=int, default=None, help="synthetic users (default 512, CPU 16)")
    p.add_argument("--items", type=int, default=None, help="synthetic items (default 10,000)")
    p.add_argument("--num-blocks", type=int, default=2)
    p.add_argument("--num-heads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=1, help="timed epochs after one warm-up epoch")
    p.add_argument("--no-graphs", dest="graphs", action="store_false",
                   help="the eager fixed-shape step instead of the CUDA graph")
    p.add_argument("--out-dir", default="results/benchmarks/long_sequences")
    p.add_argument("--work", default="/tmp/recsys-bench-long")
    args = p.parse_args(argv)
    cuda = args.device in ("auto", "cuda") and torch.cuda.is_available()
    args.device = "cuda" if cuda else "cpu"
    for key, value in SIZES[args.device].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    # users with as many interactions as the longest window, on average
    args.spec = {"n_users": args.users, "n_items": args.items,
                 "n_interactions": args.users * max(args.lengths), "seed": 7}
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    device = torch.device(args.device)
    data = load_dataset("synthetic", synthetic=args.spec)
    split = LeaveOneOut.from_data(data, "cpu").to(device)
    name = GpuTelemetry.device_name(device)
    print(f"device: {name}; torch {torch.__version__}; {data.n_users} users, "
          f"{data.n_interactions} interactions, {data.n_items} items", flush=True)
    rows = [measure(args, model, max_len, data, split, device)
            for max_len in args.lengths for model in args.models]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    table = pd.DataFrame({
        "model": frame["model"], "max_len": frame["max_len"], "status": frame["status"],
        "epoch (s)": frame["epoch_time_s"], "targets/s": frame["targets_per_s"],
        "peak train MB": frame["peak_gpu_mem_mb"], "steps": frame["steps_per_epoch"],
        "train step": frame["train_step"], "mamba backend": frame["mamba_backend"]},
        dtype=object)
    text = write(Path(args.out_dir), "long_sequences",
                 f"# Long sequences: training epoch time and peak memory ({name})",
                 f"torch {torch.__version__}. Synthetic data: {data.n_users} users, "
                 f"{data.n_interactions:,} interactions, {data.n_items:,} items (seed "
                 f"{args.spec['seed']}); D {args.embedding_dim}, {args.num_blocks} blocks, "
                 f"{args.num_heads} heads, batch {args.batch_size}; every training window once "
                 f"per epoch (the same targets at every length); median of {args.epochs} "
                 "timed epoch(s) after one warm-up epoch. Peak memory: CUDA only.",
                 table, data=frame)
    print(text, end="", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
