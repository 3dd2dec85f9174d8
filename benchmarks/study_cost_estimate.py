"""RQ3 before the study's cost phase has run: what each model costs alone on the GPU to reach its
best epoch, estimated from two measured things, (1) its exclusive seconds per epoch (training
epoch + full-ranking validation of all users) at the ML-1M shape, from the gpu_epoch runs on an
H200 (the trainer's default CUDA-graph step), and (2) its best and last epochs in the study's
ML-1M cells. The cells themselves shared the GPU with 6-18 others, so their own seconds say what
a cell cost inside such a call, not what a model costs (results/study/README.md). The direct
measurement is `jobs/study_gpu.sh cost-ml-1m-bert4rec`; this is the estimate until it runs.

    python -m benchmarks.study_cost_estimate [--sweep results/study/sweep]
        [--out results/study/cost_estimate.md]
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import pandas as pd

from benchmarks.report import write

REPO = Path(__file__).resolve().parents[1]
DATASET = "ml-1m-bert4rec"
# Exclusive epoch times on one H200 at the ML-1M shape, the trainer's graph step: the session-4
# runs (the last row per model wins: for GRU4Rec and LSTM the fp32 recurrence of run s4-b, the
# trainer's code since) and the Mamba models with the Triton scan (session 7).
EPOCH_RUNS = (REPO / "results/benchmarks/gpu_runs_ml1m_h200.jsonl",
              REPO / "results/benchmarks/mamba_triton/gpu_runs.jsonl")


def exclusive_epochs(paths=EPOCH_RUNS) -> dict[str, dict]:
    """model → the last graph-mode run at the ML-1M shape (Mamba: the triton backend)."""
    runs = {}
    for path in paths:
        for line in path.read_text().splitlines():
            r = json.loads(line)
            if r.get("kind") == "run" and r.get("mode") == "graph" and \
                    r.get("mamba_backend") in (None, "triton") and r.get("epoch_time_s"):
                runs[r["model"]] = r
    return runs


def study_cells(sweep: Path) -> dict[str, list[dict]]:
    """model → the COMPLETED ML-1M results of the study sweep (pop trains nothing: left out)."""
    cells: dict[str, list[dict]] = {}
    for path in sorted(sweep.glob("cells/*/result.json")):
        r = json.loads(path.read_text())
        if r.get("dataset") == DATASET and r.get("status") == "COMPLETED" and r["model"] != "pop":
            cells.setdefault(r["model"], []).append(r)
    return cells


def estimate(sweep: Path) -> pd.DataFrame:
    epochs, cells = exclusive_epochs(), study_cells(sweep)
    rows = []
    for model, results in cells.items():
        run = epochs[model]
        per_epoch = run["epoch_time_s"] + run["eval_time_s"]
        best = statistics.mean(r["best_epoch"] for r in results)
        last = statistics.mean(r["epochs_run"] for r in results)
        rows.append({"model": model, "seeds": len(results),
                     "Recall@10": statistics.mean(r["test_recall@10"] for r in results),
                     "epoch + validation (s)": per_epoch, "best epoch (mean)": best,
                     "to best epoch (s)": best * per_epoch, "to early stop (s)": last * per_epoch})
    table = pd.DataFrame(rows).sort_values("to best epoch (s)", ignore_index=True)
    sasrec = table.set_index("model").loc["sasrec"]
    for col in ("epoch + validation (s)", "to best epoch (s)"):
        table[f"{col.split(' (')[0]} ÷ SASRec"] = table[col] / sasrec[col]
    return table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.study_cost_estimate")
    p.add_argument("--sweep", default=str(REPO / "results/study/sweep"))
    p.add_argument("--out", default=str(REPO / "results/study/cost_estimate.md"))
    args = p.parse_args(argv)
    out = Path(args.out)
    table = estimate(Path(args.sweep))
    print(write(out.parent, out.stem, "# RQ3: each model alone on one H200, to its best epoch on "
                f"ML-1M (an estimate)", __doc__.split("\n\n")[0].strip(),
                "Command: `python -m benchmarks.study_cost_estimate`. Device of the epoch times: "
                "NVIDIA H200 (device kind `nvidia-h200`); inputs: "
                + ", ".join(f"`{p.relative_to(REPO)}`" for p in EPOCH_RUNS)
                + f" and the study's `{DATASET}` result files.", table), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
