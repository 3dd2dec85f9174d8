"""Does a cell killed mid-run and resumed from its checkpoint end where the uninterrupted run
ends? On the GPU the question is the CUDA-graph step's: it captures again after a resume, and
its warm-up steps draw dropout, masks and negatives from the CUDA generator (the CPU's eager
loop is covered by tests/test_launcher_slurm.py's kill -9 test).

Per model: the run uninterrupted, twice (is the model deterministic on this device at all?),
then the run in a child process killed with SIGKILL once its checkpoint exists and resumed in
this process. Every val_/test_ metric and every epoch's training loss compared exactly.

    python -m benchmarks.resume_check --out results/benchmarks/resume_check_h200
    (CPU smoke run: --device cpu --epochs 4 --models gru4rec sasrec)
    python -m benchmarks.resume_check --models gru4rec lstm --rnn-dropout torch --out ...
-> resume_check.json, resume_check.md, resume_check.csv
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from benchmarks import report
from recsys_core.models import RNN_DROPOUTS

MODELS = ("gru4rec", "mamba4rec", "sasrec", "bert4rec", "xlstm")
# The child runs with this process's number of CPU threads: a reduction split over another
# number of threads sums in another order (the epochs before the kill are the child's).
CHILD = ("import json, sys, torch\nfrom recsys_core.train import TrainConfig, run\n"
         "from recsys_core.train.hooks import DebugHooks\ntorch.set_num_threads(int(sys.argv[3]))\n"
         "run(TrainConfig(**json.loads(sys.argv[1])), hooks=DebugHooks(epoch_sleep_s=float(sys.argv[2])))")


def config(model: str, args, out: Path) -> dict:
    return dict(model=model, dataset=args.dataset, max_len=args.max_len, embedding_dim=64,
                num_blocks=args.num_blocks, num_heads=2, dropout=args.dropout,
                rnn_dropout=args.rnn_dropout, epochs=args.epochs, patience=args.epochs, seed=42,
                device=args.device, wandb_mode="disabled", out=str(out))


def train(cfg: dict) -> tuple[dict, list[float]]:
    from recsys_core.train import TrainConfig, run
    result = run(TrainConfig(**cfg))
    history = pd.read_parquet(Path(cfg["out"]) / "history.parquet")
    return result, [float(x) for x in history["train_loss"]]


def killed_then_resumed(cfg: dict, sleep_s: float, timeout_s: float = 600) -> tuple[dict, list[float]]:
    """The run in a child process, SIGKILLed once its checkpoint is on disk, then resumed."""
    ckpt = Path(cfg["out"]) / "checkpoint.pt"
    import torch
    child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(cfg), str(sleep_s),
                              str(torch.get_num_threads())],
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                 filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))})
    t0 = time.time()
    while not ckpt.exists():
        if child.poll() is not None or time.time() - t0 > timeout_s:
            raise RuntimeError(f"the child ended (exit {child.returncode}) or timed out before "
                               f"writing {ckpt}")
        time.sleep(0.2)
    time.sleep(sleep_s * 1.5)            # a checkpoint an epoch or two past the first
    child.send_signal(signal.SIGKILL)
    child.wait()
    return train(cfg)


def compare(a: dict, b: dict) -> list[str]:
    keys = sorted(k for k in a if k.startswith(("val_", "test_")) and isinstance(a[k], float))
    return [k for k in keys if a[k] != b.get(k)]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--num-blocks", type=int, default=2,
                   help="1: no RNN layer dropout between layers (cuDNN's own dropout state)")
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--rnn-dropout", default="cudnn", choices=RNN_DROPOUTS,
                   help="GRU4Rec/LSTM: who drops out between layers (torch: resumable on the GPU)")
    p.add_argument("--device", default="auto")
    p.add_argument("--sleep-s", type=float, default=1.0, help="the killed child's pause per epoch")
    p.add_argument("--work", default="/tmp/resume_check")
    p.add_argument("--out", default="results/benchmarks/resume_check")
    args = p.parse_args(argv)
    import torch
    device = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" \
        else "CPU"
    rows = []
    for model in args.models:
        work = Path(args.work, model)
        shutil.rmtree(work, ignore_errors=True)     # every run fresh: no earlier checkpoint
        runs = {name: config(model, args, work / name) for name in ("first", "second", "resumed")}
        first, loss1 = train(runs["first"])
        second, loss2 = train(runs["second"])
        resumed, loss3 = killed_then_resumed(runs["resumed"], args.sleep_s)
        rows.append(dict(
            model=model, device=device, train_step=first.get("train_step"),
            resumed_from_epoch=resumed.get("resumed_from_epoch"),
            test_recall_first=first["test_recall@10"], test_recall_second=second["test_recall@10"],
            test_recall_resumed=resumed["test_recall@10"],
            rerun_identical=not compare(first, second) and loss1 == loss2,
            resume_identical=not compare(first, resumed) and loss1 == loss3,
            resume_differs_in=",".join(compare(first, resumed)) or
            ("" if loss1 == loss3 else "train_loss")))
        print(rows[-1], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "resume_check.json").write_text(json.dumps(rows, indent=1))
    table = pd.DataFrame(rows)
    report.write(out, "resume_check",
                 f"# Kill -9 and resume against the uninterrupted run\n\n{device}; {args.dataset}, "
                 f"max_len {args.max_len}, {args.epochs} epochs, {args.num_blocks} blocks, dropout "
                 f"{args.dropout}, seed 42 "
                 f"(`python -m benchmarks.resume_check`)", table, data=table)


if __name__ == "__main__":
    main()
