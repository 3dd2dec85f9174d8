"""Every cell's state: what its executor's scheduler says (one query per executor for the
whole sweep, launcher/executors) merged with the cell's result file.

A cell's latest submission decides. While its scheduler confirms it queued or running, that
is its state; otherwise a result file written after that submission says COMPLETED or FAILED
(with the trainer's reason); a result file that cannot be read is FAILED; with neither, the
scheduler's word stands (CANCELLED, TIMEOUT, PREEMPTED, FAILED with the tail of the job's
stderr, NOT_STARTED, ...). A cell never submitted is MISSING unless it has a COMPLETED result.

The result file (`result.json`, read by `recsys_core.train.results.read_result`) is a cell's
one source of truth: status, resume and aggregate read it and nothing else of a finished cell.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from launcher import executors
from launcher.executors import ACTIVE, FINISHED, STATES, SchedulerState
from launcher.sweep import Sweep
from recsys_core.train.results import read_result

__all__ = ["ACTIVE", "FINISHED", "RESUBMIT", "STATES", "cell_states", "counts", "render", "watch_seconds"]

# What resume resubmits: everything that did not complete and is not queued or running.
RESUBMIT = ("FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED", "NOT_STARTED", "MISSING")


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


def scheduler_view(sweep: Sweep, latest: dict[str, dict]) -> dict[str, SchedulerState]:
    """cell id → its scheduler's state, asking each executor once for its cells."""
    by_executor: dict[str, dict[str, dict]] = {}
    for cell_id, sub in latest.items():
        by_executor.setdefault(sub.get("executor"), {})[cell_id] = sub
    out: dict[str, SchedulerState] = {}
    for name, subs in by_executor.items():
        if name not in executors.REGISTRY:
            out.update({c: SchedulerState("MISSING", f"submitted by an executor unknown here "
                                                     f"({name!r})") for c in subs})
            continue
        out.update(executors.get(name).scheduler_states(sweep, subs))
    return out


def cell_state(sub: dict | None, scheduler: SchedulerState | None, result: dict | None,
               mtime: float | None, problem: str | None) -> tuple[str, str | None]:
    """(state, reason) of one cell: the merge described at the top of this file."""
    if sub is None:
        completed = result is not None and result.get("status") == "COMPLETED"
        return ("COMPLETED" if completed else "MISSING"), None
    written_after = mtime is not None and mtime >= sub["time"] - 1
    if scheduler is not None and scheduler.confirmed and scheduler.state in ACTIVE:
        return scheduler.state, scheduler.reason     # e.g. a job SLURM will never start
    if result is not None and written_after:
        return result["status"], result.get("reason")
    if problem and written_after:
        return "FAILED", problem
    if scheduler is not None:
        return scheduler.state, scheduler.reason
    return "MISSING", None


def cell_states(sweep: Sweep) -> list[dict]:
    """One row per cell of the manifest: id, name, job_id, state, reason (and test Recall@10
    of a completed cell). Raises ExecutorError if a scheduler cannot be asked."""
    manifest = sweep.manifest()
    latest = sweep.latest_submissions()
    scheduler = scheduler_view(sweep, latest)
    rows = []
    for cell in manifest["cells"]:
        result, mtime, problem = _result(sweep.cell_dir(cell["id"]))
        sub = latest.get(cell["id"])
        state, reason = cell_state(sub, scheduler.get(cell["id"]), result, mtime, problem)
        if state == "FAILED" and not reason:
            reason = "no reason recorded"
        row = {"id": cell["id"], "name": cell["name"], "job_id": sub and sub.get("job_id"),
               "state": state if state in STATES else "FAILED", "reason": reason}
        if result is not None and state == "COMPLETED":
            row["test_recall@10"] = result.get("test_recall@10")
        rows.append(row)
    return rows


def counts(rows: list[dict]) -> dict[str, int]:
    return {s: sum(r["state"] == s for r in rows) for s in STATES if any(r["state"] == s for r in rows)}


def render(rows: list[dict], width: int = 40) -> str:
    c = counts(rows)
    done = sum(c.get(s, 0) for s in FINISHED)
    filled = int(width * done / max(len(rows), 1))
    # Columns as wide as their longest entry: NOT_STARTED, OUT_OF_MEMORY and a pack's array job
    # ids (1234567_123) are wider than the headers.
    jobs = [str(r["job_id"] or "-") for r in rows]
    w_state = max([len("state")] + [len(r["state"]) for r in rows]) + 1
    w_job = max([len("job")] + [len(j) for j in jobs]) + 1
    lines = [f"{'id':<13}{'state':<{w_state}}{'job':<{w_job}}{'test R@10':<11}name"]
    for r, job in zip(rows, jobs):
        recall = r.get("test_recall@10")
        shown = f"{recall:.4f}" if isinstance(recall, float) else "-"
        lines.append(f"{r['id']:<13}{r['state']:<{w_state}}{job:<{w_job}}{shown:<11}"
                     f"{r['name']}")
        if r["reason"] and r["state"] != "COMPLETED":
            lines.extend("    " + line for line in str(r["reason"]).splitlines()[-5:])
    lines.append("")
    lines.append(f"[{'#' * filled}{'.' * (width - filled)}] {done}/{len(rows)} finished  "
                 + "  ".join(f"{k} {v}" for k, v in c.items()))
    return "\n".join(lines)


def watch_seconds(text: str) -> float:
    """--watch's period: each refresh is one sacct call, so a cluster's accounting database
    is not polled in a busy loop (0) and sleep() gets no negative or NaN."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a number of seconds") from None
    if not value >= 1 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text}: must be a number of seconds, at least 1")
    return value
