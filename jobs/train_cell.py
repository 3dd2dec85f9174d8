"""The one thing the launcher submits: train one cell, continuing from its last checkpoint.

A cell directory holds `cell.json` (the cell's id, sweep name and resolved parameters, written
by the launcher); the trainer writes its checkpoints and result files beside it. The callable
is a submitit `Checkpointable`: on SLURM's pre-timeout/preemption signal (USR2) submitit calls
`checkpoint()`, which writes the trainer's last finished epoch (held in memory between its
checkpoint files, `checkpoint_every_s`) and requeues the same callable: the requeued job
resumes from that epoch. Requeues are bounded per cell.

A cell with num_processes > 1 (a multi-GPU cell: gpus × nodes) runs one task per node that
starts `accelerate launch --multi_gpu --num_processes P --num_machines N --machine_rank
<this node's SLURM_NODEID> --main_process_ip <first host of the allocation> --main_process_port
<a free port found by node 0>` on this same module, which then trains in each process.

Also runnable by hand or by the local executor: `python -m jobs.train_cell CELL_DIR`; it exits
0 when the cell completed, 1 when it failed, 130 when Ctrl-C (SIGINT) interrupted it (the
local executor marks such a cell interrupted, not failed, and `resume` runs it again).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import submitit

from recsys_core.bytecode import bytecode_cache

CELL_FILE = "cell.json"
REQUEUES_FILE = "requeues.json"
OOM_RETRIES_FILE = "oom_retries.json"   # the local executor's (launcher/executors/oom.py)
DEFAULT_MAX_REQUEUES = 3


def read_cell(cell_dir: Path):
    """(TrainConfig, DebugHooks) of a cell, as the launcher wrote them to cell.json; the run's
    folder is the cell's folder."""
    from recsys_core.train.config import TrainConfig
    from recsys_core.train.hooks import DebugHooks
    path = Path(cell_dir) / CELL_FILE
    try:
        cell = json.loads(path.read_text())
        config = cell["config"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise RuntimeError(f"{path}: cannot read the cell's config: {e!r}") from e
    return (TrainConfig.from_dict({**config, "out": str(cell_dir)}, str(path)),
            DebugHooks.from_dict(cell.get("debug_hooks") or {}, str(path)))


INSIDE_LAUNCH = "RECSYS_INSIDE_ACCELERATE_LAUNCH"


def accelerate_command(num_processes: int, nodes: int, node_rank: int | str, main_ip: str,
                       port: int | str, cell_dir: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
            "--num_processes", str(num_processes), "--num_machines", str(nodes),
            "--machine_rank", str(node_rank), "--main_process_ip", main_ip,
            "--main_process_port", str(port), "--mixed_precision", "no",
            "--dynamo_backend", "no", "-m", "jobs.train_cell", str(cell_dir)]


def first_host() -> str:
    """The first host of the SLURM allocation (where process 0 listens); here without SLURM."""
    nodelist = os.environ.get("SLURM_JOB_NODELIST")
    if not nodelist:
        return "127.0.0.1"
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                         text=True, timeout=60, check=True).stdout.split()
    return out[0]


def rendezvous_port(cell_dir: Path, node_rank: int, timeout_s: float = 300) -> int:
    """A port free on node 0, found by binding port 0 there (so two jobs on one node never
    collide) and shared with the other nodes through the cell directory, in a file of this run
    of the job: a requeued job keeps its id and counts SLURM_RESTART_COUNT, so its other nodes
    never read the port of the run before."""
    job = os.environ.get("SLURM_JOB_ID", str(os.getpid()))
    path = cell_dir / f".port-{job}.{os.environ.get('SLURM_RESTART_COUNT', '0')}"
    if node_rank == 0:
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        from recsys_core.atomic import atomic_write_text
        atomic_write_text(path, str(port))
        return port
    deadline = time.time() + timeout_s
    while not path.exists():
        if time.time() > deadline:
            raise RuntimeError(f"{path}: node 0 never published its port")
        time.sleep(0.5)
    return int(path.read_text())


JOB_INFO = "RECSYS_JOB_INFO"   # what the outer job knew, for the processes it launches
COMPILE_CACHES = {"TORCHINDUCTOR_CACHE_DIR": "inductor", "TRITON_CACHE_DIR": "triton"}


def shared_compile_caches(cell_dir: Path) -> None:
    """Inductor's and Triton's caches in the sweep's folder (`<sweep>/.cache/`), unless the
    environment names its own: their defaults are under the node's /tmp and ~, so a cell on
    another node (or a fresh container) compiled xLSTM's encoder and kernels again (76 s).
    Both caches key on the GPU and the software versions and write atomically, so cells of
    one sweep on several nodes may share them. Python's bytecode too, where it is not beside
    the sources (recsys_core/bytecode.py), for this process and those it starts: the sweep's
    later cells import the stack compiled."""
    sweep = Path(cell_dir).resolve().parent.parent
    if not (sweep / "manifest.json").exists():
        return              # a run folder outside a sweep: the libraries' own defaults
    for var, name in COMPILE_CACHES.items():
        os.environ.setdefault(var, str(sweep / ".cache" / name))
    bytecode_cache(sweep / ".cache" / "pycache")


def train(cell_dir: str, *, since: float, job: dict, prepared=None) -> dict:
    """Train the cell in `cell_dir` here (a multi-process cell: through `accelerate launch`);
    its test metrics, or RuntimeError if it did not complete (its result file says why).
    `since`: when the cell could first have started here (its process's start, or its hand-off
    to a worker); `job`: what the caller records of it (runner, time_queue_s; jobs/timing.py);
    `prepared`: data kept across this process's cells (jobs/worker.py)."""
    shared_compile_caches(Path(cell_dir))     # before anything compiles
    from recsys_core.atomic import atomic_write_text
    from recsys_core.cli import print_progress
    from recsys_core.train import run
    cfg, hooks = read_cell(Path(cell_dir))
    if cfg.num_processes > 1 and os.environ.get(INSIDE_LAUNCH) != "1":
        return launch_processes(cell_dir, cfg, {**job, "since": since})
    # The training stack's imports (torch, Accelerate, pandas: 1.2 s of a Beauty cell on the
    # CPU VM) belong to the start-up recorded below; imported inside run() they were in no
    # recorded part of the cell's time.
    import recsys_core.train.loop  # noqa: F401
    # Who runs this cell now: status and operators (and the kill -9 test) read it.
    atomic_write_text(Path(cell_dir) / "running.json", json.dumps(
        {"pid": os.getpid(), "host": os.uname().nodename,
         "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
         "array_task": os.environ.get("SLURM_ARRAY_TASK_ID")}))
    from recsys_core.train.setup import cells_per_gpu
    job = {**job, "time_start_s": time.time() - since, "mps_pipe_dir": mps_client(),
           "cells_per_gpu": cells_per_gpu(), "oom_retries": oom_retries(Path(cell_dir))}
    record = run(cfg, progress=print_progress, hooks=hooks, prepared=prepared, job=job)
    if record["status"] != "COMPLETED":
        # The result file already says FAILED and why; fail the job too, so SLURM agrees.
        raise RuntimeError(f"cell {Path(cell_dir).name} {record['status']}: {record['reason']}")
    return {k: v for k, v in record.items() if k.startswith("test_") or k == "status"}


def oom_retries(cell_dir: Path) -> int:
    """How many times the local executor ran this cell again after it ran out of GPU memory
    beside other cells (oom_retries.json, written by launcher/executors/oom.py)."""
    path = cell_dir / OOM_RETRIES_FILE
    try:
        return len(json.loads(path.read_text())["retries"])
    except FileNotFoundError:
        return 0
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise RuntimeError(f"{path}: cannot read the cell's retries: {e!r}") from e


def mps_client() -> str | None:
    """The MPS pipe folder this process's CUDA calls go through (the local executor's --mps),
    said once in the cell's log with the GPUs as the MPS server numbers them; None without."""
    pipe = os.environ.get("CUDA_MPS_PIPE_DIRECTORY")
    if pipe:
        print(f"MPS client: CUDA_MPS_PIPE_DIRECTORY={pipe} CUDA_MPS_LOG_DIRECTORY="
              f"{os.environ.get('CUDA_MPS_LOG_DIRECTORY')} CUDA_VISIBLE_DEVICES="
              f"{os.environ.get('CUDA_VISIBLE_DEVICES')}", file=sys.stderr, flush=True)
    return pipe


def launch_processes(cell_dir: str, cfg, job: dict) -> dict:
    """This node's share of a data-parallel cell: one `accelerate launch` per node."""
    nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
    rank = int(os.environ.get("SLURM_NODEID", "0"))
    cmd = accelerate_command(cfg.num_processes, nodes, rank, first_host(),
                             rendezvous_port(Path(cell_dir), rank), cell_dir)
    env = {**os.environ, INSIDE_LAUNCH: "1", JOB_INFO: json.dumps(job)}
    if cfg.device == "cpu":
        env["ACCELERATE_USE_CPU"] = "1"     # gloo; `--cpu` would silently run ONE process
    print("running: " + " ".join(cmd), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, env=env)
    from recsys_core.train.results import read_result
    try:
        result = read_result(Path(cell_dir)) or {}
    except ValueError:
        result = {}
    if proc.returncode != 0 or result.get("status") != "COMPLETED":
        raise RuntimeError(f"cell {Path(cell_dir).name}: accelerate launch exit "
                           f"{proc.returncode}, status {result.get('status')}: {result.get('reason')}")
    return {k: v for k, v in result.items() if k.startswith("test_") or k == "status"}


class TrainCell(submitit.helpers.Checkpointable):
    def __init__(self, cell_dir: str, max_requeues: int = DEFAULT_MAX_REQUEUES):
        self.cell_dir = str(cell_dir)
        self.max_requeues = max_requeues

    def __call__(self) -> dict:
        from jobs.timing import process_start, slurm_queue_s
        outer = os.environ.get(JOB_INFO)     # one of the processes of a multi-process cell
        if outer:
            job = json.loads(outer)
            return train(self.cell_dir, since=job.pop("since"), job=job)
        return train(self.cell_dir, since=process_start(),
                     job={"runner": "process-per-cell", "runner_cells_before": 0,
                          "time_queue_s": slurm_queue_s()})

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on USR2: the last finished epoch written (the restart point),
        then the requeue."""
        write_held_epochs()
        if not count_requeue(self.cell_dir, self.max_requeues):
            return None
        return submitit.helpers.DelayedSubmission(TrainCell(self.cell_dir, self.max_requeues))


def write_held_epochs() -> None:
    """The trainer's last finished epoch, held in memory between checkpoint files, written
    (the restart point of a requeue: USR2). A failure is said; the requeue still goes, from
    the file before."""
    try:
        from recsys_core.train.checkpoint import flush_all
        flush_all()
    except Exception as e:  # noqa: BLE001 -- the requeue must not fail with it
        print(f"the last epoch could not be written ({type(e).__name__}: {e}); requeued from "
              "the checkpoint before", file=sys.stderr, flush=True)


def count_requeue(cell_dir: str, max_requeues: int) -> bool:
    """Count one more requeue of the cell (requeues.json); False once it had max_requeues."""
    path = Path(cell_dir) / REQUEUES_FILE
    count = json.loads(path.read_text())["count"] if path.exists() else 0
    if count >= max_requeues:
        print(f"cell {Path(cell_dir).name}: {count} requeues already, not requeuing",
              file=sys.stderr)
        return False
    from recsys_core.atomic import atomic_write_text
    atomic_write_text(path, json.dumps({"count": count + 1,
                                        "last_job": os.environ.get("SLURM_JOB_ID")}))
    return True


def _as_ctrl_c(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print("usage: python -m jobs.train_cell CELL_DIR  (trains the cell whose cell.json is "
              "in CELL_DIR, from its last checkpoint)", file=sys.stderr)
        return 0 if argv in (["-h"], ["--help"]) else 2
    from recsys_core.cli import close_process_group
    # SIGTERM alone (a local launcher stopped by it stops its cells with it) ends the cell as
    # Ctrl-C does: its last finished epoch written first (recsys_core/train/loop.py), exit 130.
    # Once the cell has ended, a SIGTERM (the launcher's, after its Ctrl-C) cannot cut the exit.
    signal.signal(signal.SIGTERM, _as_ctrl_c)
    try:
        TrainCell(argv[0])()
    except (RuntimeError, ValueError) as e:   # a failed run, a bad cell.json
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        close_process_group()
    return 0


if __name__ == "__main__":
    from recsys_core.cli import exit_cli, guarded
    exit_cli(guarded(main))
