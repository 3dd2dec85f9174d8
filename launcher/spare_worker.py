"""A worker started with the launcher, before the launcher's own imports, for its first cell.

`python -m launcher sweep GRID --executor local` spends 0.4-0.65 s (an H100 host; 0.38 s on
the CPU VM) on its imports, the grid, the sweep's files and the plan before its first cell is
handed to a worker, whose interpreter and imports then take 1.8-2.4 s more. Started first, a
spare `python -m jobs.worker --spare` does its imports meanwhile; the first slot that needs a
worker (workers.py) takes it and tells it the environment it would have been started with.

What cannot change once a process has started CUDA is fixed when the spare starts: it sees
the GPU the first cell most likely gets (the first visible one; none on a machine without
NVIDIA devices), and it is taken only for a cell on exactly those GPUs. Anything else (a cell
on another GPU, a multi-GPU cell, --mps, --process-per-cell, a dry-run or SLURM sweep, a
launcher that stops early) leaves it untaken: its input is closed when the launcher ends and it
exits without a word. Its imports start nothing on the GPU (torch starts CUDA lazily).
"""
from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_lock = threading.Lock()
_spare: tuple[subprocess.Popen, str] | None = None    # the process, its CUDA_VISIBLE_DEVICES


def wanted(argv: list[str]) -> bool:
    """`sweep` or `resume` with `--executor local`, running cells in workers (the default)."""
    if not argv or argv[0] not in ("sweep", "resume"):
        return False
    if {"-h", "--help", "--process-per-cell", "--mps"} & set(argv):
        return False
    pairs = zip(argv, argv[1:] + [""])
    return any((a == "--executor" and b == "local") or a == "--executor=local" for a, b in pairs)


def first_gpu() -> str:
    """The GPU a first cell most likely gets (launcher/executors/local.py's visible_gpus, the
    pool's first, spelled as it spells it), read without starting anything: '' where there is
    none."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return next((g for g in env.split(",") if g.strip()), "")
    return "0" if Path("/dev/nvidia0").exists() else ""


def start(argv: list[str]) -> None:
    """Start the spare if this launcher command runs local cells in workers."""
    global _spare
    if not wanted(argv):
        return
    gpus = first_gpu()
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpus}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "jobs.worker", "--spare"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, env=env, text=True)
    except OSError:
        return          # the workers start as they did before
    _spare = proc, gpus
    atexit.register(discard)


def take(env: dict[str, str], log: Path) -> subprocess.Popen | None:
    """The spare, now a worker with `env` (what workers.process_env gives a new one) writing
    its output to `log`, if it is alive and sees the same GPUs; else None (and it is ended)."""
    global _spare
    with _lock:
        spare, _spare = _spare, None
    if spare is None:
        return None
    proc, gpus = spare
    if proc.poll() is not None or env.get("CUDA_VISIBLE_DEVICES", "") != gpus:
        _end(proc)
        return None
    try:
        proc.stdin.write(json.dumps({"env": env, "log": str(log)}) + "\n")
        proc.stdin.flush()
    except OSError:
        _end(proc)
        return None
    return proc


def discard() -> None:
    """End an untaken spare (EOF on its input: it exits once its imports are done)."""
    global _spare
    with _lock:
        spare, _spare = _spare, None
    if spare is not None:
        _end(spare[0])


def _end(proc: subprocess.Popen) -> None:
    try:
        proc.stdin.close()
    except OSError:
        pass
