"""A cell's time before the trainer sees it: how long its SLURM job waited in the queue, and
when its process started (the interpreter and the imports count as the cell's start-up). The
trainer records what it is given (`run(..., job=...)`: `time_queue_s`, `time_start_s`)."""
from __future__ import annotations

import os
import subprocess
import time


def process_start() -> float:
    """This process's start (epoch seconds), from /proc; now where /proc cannot tell. The
    start is counted in clock ticks since boot; the boot's epoch time is read from the clocks
    now rather than from /proc/stat's `btime`, which is whole seconds (it put up to 1 s too
    much into every recorded start-up)."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])   # field 22: starttime
        boot = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return time.time()


def _slurm_time(text: str) -> float | None:
    try:   # scontrol prints the controller's local time, as this node's clock reads it
        return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def slurm_queue_s() -> float | None:
    """Seconds this SLURM job waited between its submission (or requeue) and its start; None
    outside SLURM or where the controller does not say. One scontrol call per job."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    try:
        out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True,
                             text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    fields = dict(w.split("=", 1) for w in out.split() if "=" in w)
    submit = _slurm_time(fields.get("SubmitTime", ""))
    start = os.environ.get("SLURM_JOB_START_TIME")
    start = float(start) if start and start.isdigit() else _slurm_time(fields.get("StartTime", ""))
    if submit is None or start is None:
        return None
    return max(start - submit, 0.0)
