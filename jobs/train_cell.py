"""The one thing the launcher submits: train one cell, continuing from its last checkpoint.

A cell directory holds `cell.json` (the cell's id, sweep name and resolved parameters, written
by the launcher); the trainer writes its checkpoints and result files beside it. The callable
is a submitit `Checkpointable`: on SLURM's pre-timeout/preemption signal (USR2) submitit calls
`checkpoint()`, which requeues the same callable. The trainer checkpoints after every epoch,
so the requeued job resumes from the last finished epoch. Requeues are bounded per cell.

Also runnable by hand or by the local executor: `python -m jobs.train_cell CELL_DIR`.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import submitit

CELL_FILE = "cell.json"
REQUEUES_FILE = "requeues.json"
DEFAULT_MAX_REQUEUES = 3


def read_cell(cell_dir: Path) -> dict:
    path = Path(cell_dir) / CELL_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RuntimeError(f"{path}: cannot read the cell description: {e}") from e


def train_config(cell_dir: Path):
    """The TrainConfig of a cell: its parameters plus what the launcher owns (out, ids)."""
    from recsys_core.train.config import TrainConfig
    cell = read_cell(cell_dir)
    values = {**cell["params"], "out": str(cell_dir), "run_id": cell["id"],
              "wandb_group": cell.get("sweep")}
    return TrainConfig.from_dict(values, str(Path(cell_dir) / CELL_FILE))


class TrainCell(submitit.helpers.Checkpointable):
    def __init__(self, cell_dir: str, max_requeues: int = DEFAULT_MAX_REQUEUES):
        self.cell_dir = str(cell_dir)
        self.max_requeues = max_requeues

    def __call__(self) -> dict:
        from recsys_core.train import run
        from recsys_core.atomic import atomic_write_text
        cfg = train_config(Path(self.cell_dir))
        # Who runs this cell now: status and operators (and the kill -9 test) read it.
        atomic_write_text(Path(self.cell_dir) / "running.json", json.dumps(
            {"pid": os.getpid(), "host": os.uname().nodename,
             "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
             "array_task": os.environ.get("SLURM_ARRAY_TASK_ID")}))
        record = run(cfg)
        if record["status"] != "COMPLETED":
            # The result file already says FAILED and why; fail the job too, so SLURM agrees.
            raise RuntimeError(f"cell {Path(self.cell_dir).name} {record['status']}: {record['reason']}")
        return {k: v for k, v in record.items() if k.startswith("test_") or k == "status"}

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on USR2. The epoch checkpoint on disk is the restart point."""
        path = Path(self.cell_dir) / REQUEUES_FILE
        count = json.loads(path.read_text())["count"] if path.exists() else 0
        if count >= self.max_requeues:
            print(f"cell {Path(self.cell_dir).name}: {count} requeues already, not requeuing",
                  file=sys.stderr)
            return None
        from recsys_core.atomic import atomic_write_text
        atomic_write_text(path, json.dumps({"count": count + 1,
                                            "last_job": os.environ.get("SLURM_JOB_ID")}))
        return submitit.helpers.DelayedSubmission(TrainCell(self.cell_dir, self.max_requeues))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m jobs.train_cell CELL_DIR", file=sys.stderr)
        return 2
    try:
        TrainCell(argv[0])()
    except (RuntimeError, ValueError) as e:   # a failed run, a bad cell.json
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
