"""What writing checkpoint files costs the Amazon Beauty SASRec cell (the amazon-beauty grid's,
seed 42): its trainer run once per `checkpoint_every_s`, each in a fresh process, with the
median training epoch, the validation, and the time spent saving and in the final phase.
0 writes after every epoch (what the trainer did before session 26); the default, 30 s, after
the first epoch and at the end.

    RECSYS_DATA_MIRROR=<mirror> python -m benchmarks.checkpoint_cost \
        --out-dir results/benchmarks/checkpoint_cost

Writes checkpoint_cost.{md,csv}."""
import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks.report import fresh_process_row, write

INTERVALS = (0.0, 30.0)


def one(every_s: float, out: str) -> dict:
    """The cell in this process; its timings."""
    from benchmarks.beauty_cell_profile import CELL
    from recsys_core.train import TrainConfig
    from recsys_core.train.loop import run
    from recsys_core.train.results import read_history
    record = run(TrainConfig(**{**CELL, "out": out, "checkpoint_every_s": every_s}))
    train = read_history(Path(out), "train_time_s")
    evals = read_history(Path(out), "eval_time_s")
    return {"checkpoint_every_s": every_s, "device": record["device"],
            "epochs": record["epochs_run"],
            "train_epoch_s_median": statistics.median(train[1:]),   # the first holds the capture
            "validation_s_median": statistics.median(evals[1:]),
            "time_epochs_s": record["time_epochs_s"], "time_saving_s": record["time_saving_s"],
            "time_final_s": record["time_final_s"], "wall_time_s": record["wall_time_s"],
            "test_recall@10": record["test_recall@10"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.checkpoint_cost")
    p.add_argument("--out-dir", default="results/benchmarks/checkpoint_cost")
    p.add_argument("--one", type=float, help=argparse.SUPPRESS)     # a child's interval
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one is not None:
        print(json.dumps(one(args.one, args.run_dir)))
        return 0
    work = Path(tempfile.mkdtemp(prefix="checkpoint-cost-"))
    table = pd.DataFrame([fresh_process_row("benchmarks.checkpoint_cost", "--one", str(every_s),
                                            "--run-dir", str(work / f"every{every_s:g}"))
                          for every_s in INTERVALS])
    print(write(Path(args.out_dir), "checkpoint_cost",
                f"# Checkpoint files and the Beauty cell ({time.strftime('%Y-%m-%d')})",
                "`python -m benchmarks.checkpoint_cost`: the cell's trainer, one fresh process "
                "per row; medians over epochs 2 on.", table, data=table), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
