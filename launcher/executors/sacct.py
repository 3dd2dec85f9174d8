"""What SLURM's accounting says of a sweep's jobs (one sacct call for all of them): each job's
state in the launcher's words, and why a pending job waits, where that is worth saying: a
job SLURM will never start as it asked (more than its partition has, a per-job limit) waits
in the queue forever without it. A pending job's reason comes from squeue (slurmctld's own,
set at its first scheduling pass); slurmdbd receives it later, over a minute later on a busy
controller, so sacct alone would say nothing for that long."""
from __future__ import annotations

import re
import shlex
import subprocess

from launcher.executors.base import ExecutorError


class SlurmError(ExecutorError):
    pass


# sacct states → the launcher's states
SACCT_STATES = {
    "PENDING": "PENDING", "REQUEUED": "PENDING", "RESV_DEL_HOLD": "PENDING",
    "REQUEUE_FED": "PENDING", "REQUEUE_HOLD": "PENDING", "SUSPENDED": "PENDING",
    "RUNNING": "RUNNING", "COMPLETING": "RUNNING", "CONFIGURING": "RUNNING",
    "STAGE_OUT": "RUNNING", "SIGNALING": "RUNNING", "RESIZING": "RUNNING",
    "COMPLETED": "COMPLETED", "CANCELLED": "CANCELLED", "TIMEOUT": "TIMEOUT",
    "PREEMPTED": "PREEMPTED", "FAILED": "FAILED", "NODE_FAIL": "FAILED",
    "OUT_OF_MEMORY": "FAILED", "BOOT_FAIL": "FAILED", "DEADLINE": "TIMEOUT",
}


def sacct_states(job_ids: list[str]) -> dict[str, dict]:
    """job id (e.g. '123_4' or '125') → {state, exit_code, raw, reason}, from ONE sacct call
    (reason: SLURM's for a pending job, e.g. Priority or PartitionConfig; '' where not known)."""
    if not job_ids:
        return {}
    # Array tasks are addressed through their array job id; ask once for every array.
    arrays = sorted({j.split("_")[0] for j in job_ids}, key=lambda s: int(s) if s.isdigit() else s)
    cmd = ["sacct", "-X", "-n", "-P", "-D", "-o", "JobID,State,ExitCode,Start,End,Reason",
           "-j", ",".join(arrays)]
    proc = _run(cmd)
    if proc.returncode != 0 and "Reason" in proc.stderr:   # a SLURM whose sacct lacks the field
        cmd[6] = cmd[6].removesuffix(",Reason")
        proc = _run(cmd)
    if proc.returncode != 0:
        raise SlurmError(f"{shlex.join(cmd[:6])} ... failed: {proc.stderr.strip()}")
    states: dict[str, dict] = {}
    for line in proc.stdout.splitlines():   # -D lists requeued runs too; the last line wins
        parts = line.split("|")
        if len(parts) < 3:
            continue
        job, state, exit_code = parts[0], parts[1].split()[0], parts[2]
        entry = {"state": SACCT_STATES.get(state, state), "exit_code": exit_code, "raw": state,
                 "reason": parts[5] if len(parts) > 5 else ""}
        if "[" in job:   # a pending array summary line like 123_[0-9%4]
            base, rng = job.split("_[", 1)
            for task in _expand_range(rng.rstrip("]").split("%")[0]):
                states[f"{base}_{task}"] = dict(entry)
            continue
        states[job] = entry
    # slurmctld knows a job before slurmdbd does, and a pending job's reason first.
    unsettled = {j for j in job_ids if states.get(j, {}).get("state", "PENDING") == "PENDING"}
    for job, live in squeue_states(sorted(unsettled)).items():
        if job in unsettled and (job in states or live["state"] in ("PENDING", "RUNNING")):
            states[job] = {**states.get(job, {"exit_code": ""}), **live}
    return states


def squeue_states(job_ids: list[str]) -> dict[str, dict]:
    """job id → {state, raw, reason} from slurmctld (one squeue call; -r lists a pending
    array's tasks one per line), for the jobs it still holds; {} where squeue fails."""
    if not job_ids:
        return {}
    arrays = sorted({j.split("_")[0] for j in job_ids})
    try:
        proc = _run(["squeue", "-h", "-r", "-o", "%i|%T|%r", "-j", ",".join(arrays)])
    except SlurmError:
        return {}
    out = {}
    for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
        parts = line.split("|")
        if len(parts) == 3:
            out[parts[0]] = {"state": SACCT_STATES.get(parts[1], parts[1]), "raw": parts[1],
                             "reason": parts[2]}
    return out


def _expand_range(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


# sacct's Reason for a pending job: the waits every queue has, and those where the job never
# starts as it asked (squeue(1)'s REASON codes), with what the job asked for too much of.
ORDINARY_WAITS = {"", "None", "Priority", "Resources", "BeginTime", "Dependency",
                  "JobArrayTaskLimit"}
NEVER_AS_ASKED = {
    "PartitionConfig": "more CPUs, GPUs, memory or nodes than its partition has",
    "PartitionNodeLimit": "more nodes than its partition allows",
    "PartitionTimeLimit": "more time than its partition allows",
    "BadConstraints": "a constraint no node meets",
    "InvalidAccount": "an account it may not use",
    "InvalidQOS": "a QOS it may not use",
}
PER_JOB_LIMIT = re.compile(r"^(QOS|Assoc)Max\w*PerJob")   # e.g. QOSMaxGRESPerJob


def pending_reason(job: str, reason: str) -> str | None:
    """What `status` says of a pending job beyond PENDING, or None for an ordinary wait."""
    if reason in ORDINARY_WAITS:
        return None
    asked = NEVER_AS_ASKED.get(reason) or \
        ("more than a per-job limit of its QOS or account" if PER_JOB_LIMIT.match(reason) else None)
    if asked:
        return (f"will not start: SLURM holds job {job} ({reason}: it asks for {asked}); "
                "cancel it and ask for less in the grid's resources")
    return f"pending: {reason}"


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as e:
        raise SlurmError(f"{cmd[0]} could not be run ({e}); is SLURM reachable here?") from None
