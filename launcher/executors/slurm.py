"""The SLURM executor: cells → submitit job arrays (one sbatch per group of identical
resources), job states from one sacct call, scancel.

Packing (`cells_per_job` in a grid's resources, or `--cells-per-job K`): each array task runs
a pack of up to K cells of its group one after another in one process (jobs/pack.py), so a
grid of N cells queues N/K jobs. Everything else stays per cell: the manifest maps each cell to
its pack's job id, `status` shows cells (a pack's running cell RUNNING, those after it
PENDING, the finished ones by their result files), `resume` resubmits only unfinished cells,
`cancel --cells` stops one cell of a pack and lets the others run, and a preempted pack
requeues with its unfinished cells only.

Only ids, paths and validated resource values reach sbatch; a cell's parameters travel in its
cell.json and the job's pickle, never through a shell. Secrets (WANDB_API_KEY, ...) reach the
job through the environment sbatch exports from the submitting shell, not through any file.
"""
from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import submitit

from jobs.pack import CANCELLED, TrainPack
from jobs.train_cell import TrainCell
from launcher.executors.base import (ACTIVE, STATES, Executor, SchedulerState,
                                     tail, written_since)
from launcher.executors.sacct import SlurmError, pending_reason, sacct_states
from launcher.grid import Cell, Resources
from launcher.sweep import Sweep
from recsys_core.atomic import atomic_write_text

DEFAULT_ARRAY_PARALLELISM = 64
MAX_REQUEUES = 3
ACCOUNTING_LAG_S = 300   # a job sacct doesn't know yet, submitted this recently, is PENDING
_SAFE = re.compile(r"^[^\x00-\x1f\x7f]*$")   # no newline or control character in #SBATCH lines


# --mps starts a daemon beside the launcher, which on a cluster is not where the cells run; MPS
# there is the admins' (gres/mps: slurmd starts the daemon for the jobs that ask for it), and
# a pack runs its cells one after another, so it has none to overlap.
MPS_ON_SLURM = ("--mps is for --executor local (it starts an MPS daemon beside the launcher, "
                "which runs the cells); on SLURM, MPS is a generic resource the admins "
                "configure (gres/mps): where they have, ask for it in the grid's resources, "
                "e.g. `slurm_extra: {gres: 'mps:50'}` (slurm.schedmd.com/gres.html, MPS "
                "Management), and drop --mps")


def sbatch_parameters(res: Resources, job_name: str, parallelism: int) -> dict:
    """Resources → submitit.SlurmExecutor parameters (SLURM's own names). A multi-GPU cell
    runs one task per node that starts `accelerate launch` with one process per GPU (the
    layout Accelerate needs)."""
    params = {"job_name": job_name, "nodes": res.nodes, "ntasks_per_node": 1,
              "array_parallelism": parallelism,
              "additional_parameters": dict(res.slurm_extra)}
    for key, value in (("time", res.time_minutes), ("gpus_per_node", res.gpus or None),
                       ("cpus_per_task", res.cpus), ("partition", res.partition),
                       ("account", res.account), ("qos", res.qos),
                       ("constraint", res.constraint), ("mem", res.mem)):
        if value is not None:
            params[key] = value
    for key, value in [*params.items(), *params["additional_parameters"].items()]:
        if isinstance(value, str) and not _SAFE.match(value):
            raise SlurmError(f"resource {key}={value!r} contains a control character (newline?); "
                             "it would break the sbatch script")
    return params


def groups(cells: list[Cell]) -> dict[str, list[Cell]]:
    """Cells with identical resources share one job array."""
    out: dict[str, list[Cell]] = defaultdict(list)
    keys: dict[int, str] = {}      # cells share Resources objects: describe each once
    for c in cells:
        key = keys.get(id(c.resources))
        if key is None:
            key = keys[id(c.resources)] = repr(sorted(asdict(c.resources).items()))
        out[key].append(c)
    return dict(out)


def job_name(sweep_name: str, cells: list[Cell]) -> str:
    # Array tasks share one job name; a single cell's job is named by its id.
    name = cells[0].id if len(cells) == 1 else f"{sweep_name}-{len(cells)}cells"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:100]


def describe(res: Resources) -> str:
    """A resource group in a line: the values set, e.g. `partition=gpu gpus=1 time=04:00:00`."""
    return " ".join(f"{k}={v}" for k, v in asdict(res).items() if v not in (None, {}, 0)) or \
        "(cluster defaults)"


def stderr_log(sweep: Sweep, job_id: str) -> Path:
    """The job's stderr as submitit names it (task 0): the tail is a failed job's reason."""
    return sweep.root / "slurm" / job_id / f"{job_id}_0_log.err"


def job_folder(sweep: Sweep) -> Path:
    return sweep.root / "slurm" / "%j"


class SlurmExecutor(Executor):
    name = "slurm"
    help = "default: submit job arrays; needs sbatch"
    cancels = "SLURM job(s)"

    def unavailable_reason(self) -> str | None:
        """No sbatch, or a controller that does not answer."""
        if shutil.which("sbatch") is None:
            return "SLURM is not installed here (no sbatch on the PATH)"
        try:
            proc = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True,
                                  timeout=30)
        except (OSError, subprocess.SubprocessError) as e:
            return f"sinfo failed ({e})"
        if proc.returncode != 0:
            said = " / ".join(x.strip() for x in proc.stderr.splitlines() if x.strip())
            return f"the SLURM controller does not answer (sinfo: {said or f'exit {proc.returncode}'})"
        return None

    def submit(self, sweep: Sweep, cells: list[Cell]) -> None:
        if self.options.mps:
            raise SlurmError(MPS_ON_SLURM)
        name = sweep.manifest()["name"]
        limit = max_array_size()
        records: list[dict] = []
        for group in groups(cells).values():
            group_packs = packs(group, self.options.cells_per_job)
            for start in range(0, len(group_packs), limit):   # arrays larger than allowed
                chunk = group_packs[start:start + limit]
                flat = [c for pack in chunk for c in pack]
                for c in flat:   # a resumed cell: an earlier `cancel` of it no longer holds
                    (sweep.cell_dir(c.id) / CANCELLED).unlink(missing_ok=True)
                ex = submitit.SlurmExecutor(folder=job_folder(sweep))
                ex.update_parameters(**sbatch_parameters(flat[0].resources, job_name(name, flat),
                                                         DEFAULT_ARRAY_PARALLELISM))
                try:   # submitit prints sbatch's stderr too: it is in the one-line error instead
                    with contextlib.redirect_stderr(io.StringIO()), ex.batch():
                        jobs = [ex.submit(job_callable(sweep, pack)) for pack in chunk]
                except (submitit.core.utils.FailedJobError, OSError) as e:
                    said = " / ".join(line.strip() for line in str(e).splitlines() if line.strip())
                    before = f"; {len(records)} cell(s) of other groups were submitted" \
                        if records else ""
                    raise SlurmError(f"sbatch refused the {len(flat)} cell(s) with resources "
                                     f"{describe(flat[0].resources)} (first: {flat[0].name}): "
                                     f"{said}{before}") from None
                chunk_records = [{"cell": c.id, "executor": self.name, "job_id": str(job.job_id),
                                  **({"pack_size": len(pack)} if len(pack) > 1 else {})}
                                 for pack, job in zip(chunk, jobs) for c in pack]
                sweep.record_submissions(chunk_records)
                records += chunk_records
        arrays = sorted({r["job_id"].split("_")[0] for r in records})
        jobs_n = len({r["job_id"] for r in records})
        packed = f" in {jobs_n} jobs" if jobs_n != len(records) else ""
        print(f"submitted {len(records)} cells{packed} as {len(arrays)} array job(s) "
              f"{', '.join(arrays)} → {sweep.root}")

    def scheduler_states(self, sweep: Sweep, submissions: dict[str, dict]
                         ) -> dict[str, SchedulerState]:
        sacct = sacct_states([s["job_id"] for s in submissions.values()])
        out = {}
        for cell_id, sub in submissions.items():
            job = sub["job_id"]
            cell_dir = sweep.cell_dir(cell_id)
            if sub.get("pack_size") and written_since(cell_dir / CANCELLED, sub["time"]):
                out[cell_id] = SchedulerState("CANCELLED", f"cancelled; its pack (job {job}) "
                                                           "went on with its other cells")
            elif job in sacct and sacct[job]["state"] in ACTIVE and sub.get("pack_size"):
                # A pack runs one cell at a time: the others are queued or done (their result
                # files say so: unconfirmed, a result written since the submission wins).
                running = sacct[job]["state"] == "RUNNING" and \
                    written_since(cell_dir / "running.json", sub["time"])
                out[cell_id] = SchedulerState(
                    "RUNNING" if running else "PENDING",
                    None if running else pending_reason(job, sacct[job]["reason"]),
                    confirmed=False)
            elif job in sacct:
                state = sacct[job]["state"]
                if state not in ACTIVE:   # ended: stands only where no result was written
                    state = "FAILED" if state == "COMPLETED" or state not in STATES else state
                    reason = tail(stderr_log(sweep, job)) or \
                        f"job {job} ended {sacct[job]['raw']} without a result file"
                    out[cell_id] = SchedulerState(state, reason)
                else:
                    out[cell_id] = SchedulerState(state, pending_reason(job, sacct[job]["reason"])
                                                  if state == "PENDING" else None)
            elif time.time() - sub["time"] < ACCOUNTING_LAG_S:
                out[cell_id] = SchedulerState("PENDING", confirmed=False)   # not in slurmdbd yet
            else:
                out[cell_id] = SchedulerState("MISSING", f"job {job} is unknown to sacct")
        return out

    def cancel(self, sweep: Sweep, submissions: dict[str, dict]) -> int:
        """scancel the cells' jobs; a pack whose other cells are not finished goes on: its
        cancelled cells are marked (jobs/pack.py skips them) and the running one is stopped
        (USR1 to the job)."""
        whole, marked, signal_only = [], [], []
        latest = sweep.latest_submissions()
        for job in sorted({s["job_id"] for s in submissions.values()}):
            mine = [c for c, s in submissions.items() if s["job_id"] == job]
            others = [c for c, s in latest.items() if s["job_id"] == job and c not in mine
                      and s.get("pack_size") and
                      not written_since(sweep.cell_dir(c) / "result.json", s["time"])]
            if not others:
                whole.append(job)
                continue
            for c in mine:
                atomic_write_text(sweep.cell_dir(c) / CANCELLED,
                                  json.dumps({"time": time.time(), "job_id": job}))
            marked.append(job)
            if any(_running_in_pack(sweep.cell_dir(c), submissions[c]["time"]) for c in mine):
                signal_only.append(job)   # else the mark is enough: the pack skips the cell
        if whole:
            _scancel(whole)
        for job in signal_only:
            _scancel([job], "--signal=USR1", check=False)
        return len(whole) + len(marked)


def _running_in_pack(cell_dir: Path, since: float) -> bool:
    """The cell started in its pack (after the pack installed its USR1 handler) and has not
    finished: only then does a signal have a cell to stop."""
    return written_since(cell_dir / "running.json", since) and \
        not written_since(cell_dir / "result.json", since)


def _scancel(job_ids: list[str], *options: str, check: bool = True) -> None:
    try:
        proc = subprocess.run(["scancel", *options, *job_ids], capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise SlurmError(f"scancel could not be run ({e}); is SLURM reachable here?") from None
    if proc.returncode != 0 and check:
        said = " / ".join(x.strip() for x in proc.stderr.splitlines() if x.strip())
        raise SlurmError(f"scancel failed: {said or f'exit {proc.returncode}'}")


def packs(cells: list[Cell], per_job: int | None) -> list[list[Cell]]:
    """One resource group's cells in packs of `per_job` (default: the group's
    resources.cells_per_job), in order."""
    k = per_job if per_job is not None else cells[0].resources.cells_per_job
    if k < 1:
        raise SlurmError(f"--cells-per-job {k}: must be at least 1")
    if k > 1 and cells[0].resources.nodes > 1:
        raise SlurmError(f"cells_per_job={k}: packing is for cells of one node; "
                         f"{cells[0].name} asks for {cells[0].resources.nodes} nodes")
    return [cells[i:i + k] for i in range(0, len(cells), k)]


def job_callable(sweep: Sweep, pack: list[Cell]):
    """What an array task runs: one cell (TrainCell), or a pack of them (TrainPack)."""
    dirs = [str(sweep.cell_dir(c.id)) for c in pack]
    return TrainCell(dirs[0], MAX_REQUEUES) if len(dirs) == 1 else TrainPack(dirs, MAX_REQUEUES)


def max_array_size() -> int:
    """Tasks per array the cluster accepts (MaxArraySize - 1 is the largest index)."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                             timeout=30).stdout
        match = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.M)
        return max(int(match.group(1)) - 1, 1) if match else 1000
    except (OSError, subprocess.SubprocessError):
        return 1000


