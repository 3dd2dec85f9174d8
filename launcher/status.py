"""Every cell's state, from the result files plus ONE sacct call for the whole sweep.

A cell's latest submission decides: while SLURM says it is queued or running, that is its
state; once it has ended, a result file written after that submission says COMPLETED or
FAILED (with the trainer's reason); with no such result, SLURM's end state stands (CANCELLED,
TIMEOUT, PREEMPTED, FAILED: the reason is then the tail of the job's stderr). A cell never
submitted is MISSING unless it has a COMPLETED result. A cell of a local sweep is PENDING while
the launcher that queued it lives, NOT_STARTED once it is gone without starting it (Ctrl-C),
CANCELLED if it was stopped while it ran.

The result file (`result.json`, read by `recsys_core.train.results.read_result`) is a cell's
one source of truth: status, resume and aggregate read it and nothing else of a finished cell.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from launcher import slurm
from launcher.local import INTERRUPTED_MARK
from launcher.sweep import Sweep
from recsys_core.train.results import read_result

STATES = ("PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED",
          "NOT_STARTED", "MISSING")
ACTIVE = ("PENDING", "RUNNING")
FINISHED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED")
# What resume resubmits: everything that did not complete and is not queued or running.
RESUBMIT = ("FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED", "NOT_STARTED", "MISSING")
ACCOUNTING_LAG_S = 300   # a job sacct doesn't know yet, submitted this recently, is PENDING


def _tail(path: Path, lines: int = 5) -> str | None:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return None
    useful = [line for line in text if line.strip()]
    return "\n".join(useful[-lines:]) or None


def _result(cell_dir: Path) -> tuple[dict | None, float | None, str | None]:
    """(result, its mtime, problem): a corrupt result file is reported, not fatal."""
    path = cell_dir / "result.json"
    try:
        mtime = path.stat().st_mtime
        result = read_result(cell_dir)
    except FileNotFoundError:
        return None, None, None
    except (OSError, ValueError) as e:
        return None, mtime, f"{path}: unreadable result ({e})"
    if result is None:
        return None, None, None
    return result, mtime, None


def _process_alive(pid, needle: str) -> bool:
    """pid is a live process whose command line holds `needle` (not a recycled pid)."""
    try:
        pid = int(pid)
        os.kill(pid, 0)
        return needle in Path(f"/proc/{pid}/cmdline").read_text()
    except (OSError, ValueError, TypeError):
        return False


def _alive(pid_file: Path) -> bool:
    try:
        return _process_alive(pid_file.read_text(), "train_cell")
    except OSError:
        return False


def _since(path: Path, t: float) -> bool:
    """path exists and was written at or after time t (a second of clock slack)."""
    try:
        return path.stat().st_mtime >= t - 1
    except OSError:
        return False


def cell_states(sweep: Sweep) -> list[dict]:
    manifest = sweep.manifest()
    latest = sweep.latest_submissions()
    job_ids = [s["job_id"] for s in latest.values() if s.get("executor") == "slurm"]
    sacct = slurm.sacct_states(job_ids) if job_ids else {}
    rows = []
    for cell in manifest["cells"]:
        cell_dir = sweep.cell_dir(cell["id"])
        result, mtime, problem = _result(cell_dir)
        sub = latest.get(cell["id"])
        row = {"id": cell["id"], "name": cell["name"], "job_id": sub and sub.get("job_id"),
               "state": "MISSING", "reason": None}
        fresh = result is not None and (sub is None or mtime >= sub["time"] - 1)
        if sub is None:
            if result and result.get("status") == "COMPLETED":
                row["state"] = "COMPLETED"
        elif sub.get("executor") == "local":
            stale = mtime is not None and mtime < sub["time"] - 1
            row.update(_local_state(cell_dir, sub, result if fresh else None,
                                    None if stale else problem))
        elif sub.get("executor") == "slurm" and \
                sacct.get(sub["job_id"], {}).get("state") in ACTIVE:
            row["state"] = sacct[sub["job_id"]]["state"]
        elif fresh:
            row["state"] = result["status"]
            row["reason"] = result.get("reason")
        elif problem:
            row.update(state="FAILED", reason=problem)
        elif sub.get("executor") == "slurm" and sub["job_id"] in sacct:
            state = sacct[sub["job_id"]]["state"]
            row["state"] = "FAILED" if state == "COMPLETED" else state   # ended without a result
            if row["state"] not in STATES:
                row["state"] = "FAILED"
            row["reason"] = _tail(slurm.log_paths(sweep, sub["job_id"])[1]) or \
                f"job {sub['job_id']} ended {sacct[sub['job_id']]['raw']} without a result file"
        elif sub.get("executor") == "slurm" and time.time() - sub["time"] < ACCOUNTING_LAG_S:
            row["state"] = "PENDING"      # just submitted: slurmdbd has not recorded it yet
        elif sub.get("executor") == "slurm":
            row["reason"] = f"job {sub['job_id']} is unknown to sacct"
        if row["state"] == "FAILED" and not row["reason"]:
            row["reason"] = "no reason recorded"
        if result is not None and row["state"] == "COMPLETED":
            row["test_recall@10"] = result.get("test_recall@10")
        rows.append(row)
    return rows


def _local_state(cell_dir: Path, sub: dict, result: dict | None, problem: str | None) -> dict:
    """A cell of a local sweep, from its files and the launcher that queued it."""
    started = _since(cell_dir / "local.pid", sub["time"])
    if started and _alive(cell_dir / "local.pid"):
        return {"state": "RUNNING"}
    if result is not None:
        return {"state": result["status"], "reason": result.get("reason")}
    if problem:
        return {"state": "FAILED", "reason": problem}
    if _since(cell_dir / INTERRUPTED_MARK, sub["time"]):
        return {"state": "CANCELLED", "reason": "interrupted: the local sweep was stopped "
                                                "while it ran (resume runs it again)"}
    if started:
        return {"state": "FAILED", "reason": _tail(cell_dir / "local.err") or "no result file"}
    if _process_alive(sub.get("launcher_pid"), "launcher"):
        return {"state": "PENDING", "reason": None}
    return {"state": "NOT_STARTED",
            "reason": "not started: the local sweep stopped before it (resume runs it)"}


def counts(rows: list[dict]) -> dict[str, int]:
    return {s: sum(r["state"] == s for r in rows) for s in STATES if any(r["state"] == s for r in rows)}


def render(rows: list[dict], width: int = 40) -> str:
    c = counts(rows)
    done = sum(c.get(s, 0) for s in FINISHED)
    filled = int(width * done / max(len(rows), 1))
    lines = [f"{'id':<13}{'state':<11}{'job':<12}{'test R@10':<11}name"]
    for r in rows:
        recall = r.get("test_recall@10")
        shown = f"{recall:.4f}" if isinstance(recall, float) else "-"
        lines.append(f"{r['id']:<13}{r['state']:<11}{str(r['job_id'] or '-'):<12}{shown:<11}"
                     f"{r['name']}")
        if r["reason"] and r["state"] not in ("COMPLETED",) + ACTIVE:
            lines.extend("    " + line for line in str(r["reason"]).splitlines()[-5:])
    lines.append("")
    lines.append(f"[{'#' * filled}{'.' * (width - filled)}] {done}/{len(rows)} finished  "
                 + "  ".join(f"{k} {v}" for k, v in c.items()))
    return "\n".join(lines)
