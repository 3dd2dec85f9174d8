"""The SLURM backend: cells → submitit job arrays (one sbatch per group of identical
resources), the exact sbatch scripts for dry-runs, job states from one sacct call, scancel.

Only ids, paths and validated resource values reach sbatch; a cell's parameters travel in its
cell.json and the job's pickle, never through a shell. Secrets (WANDB_API_KEY, ...) reach the
job through the environment sbatch exports from the submitting shell, not through any file.
"""
from __future__ import annotations

import contextlib
import io
import re
import shlex
import shutil
import subprocess
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from unittest import mock

import submitit
from submitit.slurm.slurm import _make_sbatch_string

from launcher.grid import Cell, Resources
from launcher.sweep import Sweep, job_params
from jobs.train_cell import TrainCell, accelerate_command

DEFAULT_ARRAY_PARALLELISM = 64
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
_SAFE = re.compile(r"^[^\x00-\x1f\x7f]*$")   # no newline or control character in #SBATCH lines


class SlurmError(RuntimeError):
    pass


def submitit_parameters(res: Resources, job_name: str, parallelism: int) -> dict:
    """Resources → AutoExecutor parameters. A multi-GPU cell runs one task per node that
    starts `accelerate launch` with one process per GPU (the layout Accelerate needs)."""
    params = {
        "name": job_name,
        "nodes": res.nodes,
        "tasks_per_node": 1,
        "slurm_array_parallelism": parallelism,
        "slurm_additional_parameters": dict(res.slurm_extra),
    }
    if res.time_minutes is not None:
        params["timeout_min"] = res.time_minutes
    if res.gpus:
        params["gpus_per_node"] = res.gpus
    if res.cpus is not None:
        params["cpus_per_task"] = res.cpus
    for key, value in (("slurm_partition", res.partition), ("slurm_account", res.account),
                       ("slurm_qos", res.qos), ("slurm_constraint", res.constraint),
                       ("slurm_mem", res.mem)):
        if value is not None:
            params[key] = value
    for key, value in [*params.items(), *params["slurm_additional_parameters"].items()]:
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


def _job_name(sweep_name: str, cells: list[Cell]) -> str:
    # Array tasks share one job name; a single cell's job is named by its id.
    name = cells[0].id if len(cells) == 1 else f"{sweep_name}-{len(cells)}cells"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:100]


def executor(sweep: Sweep, params: dict, scripts_only: bool = False) -> submitit.AutoExecutor:
    """submitit's SLURM executor for `params`. `scripts_only` (dry-run: render sbatch scripts,
    submit nothing) also works where SLURM is not installed: submitit refuses to build its
    executor without `srun` on the PATH (`SlurmExecutor.affinity`), which writing a script
    does not need."""
    unchecked = mock.patch.object(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))
    with unchecked if scripts_only and shutil.which("srun") is None else contextlib.nullcontext():
        ex = submitit.AutoExecutor(folder=sweep.root / "slurm" / "%j", cluster="slurm")
    ex.update_parameters(**params)
    return ex


def submit(sweep: Sweep, cells: list[Cell], parallelism: int = DEFAULT_ARRAY_PARALLELISM,
           max_requeues: int = 3) -> list[dict]:
    """Submit cells as arrays; returns the submission records (also appended to the sweep)."""
    name = sweep.manifest()["name"]
    limit = max_array_size()
    records = []
    for group in groups(cells).values():
        for start in range(0, len(group), limit):    # arrays larger than the cluster allows
            chunk = group[start:start + limit]
            params = submitit_parameters(chunk[0].resources, _job_name(name, chunk), parallelism)
            ex = executor(sweep, params)
            try:   # submitit prints sbatch's stderr too: it is in the one-line error instead
                with contextlib.redirect_stderr(io.StringIO()), ex.batch():
                    jobs = [ex.submit(TrainCell(str(sweep.cell_dir(c.id)), max_requeues))
                            for c in chunk]
            except (submitit.core.utils.FailedJobError, OSError) as e:
                said = " / ".join(line.strip() for line in str(e).splitlines() if line.strip())
                before = f"; {len(records)} cell(s) of other groups were submitted" if records else ""
                raise SlurmError(f"sbatch refused the {len(chunk)} cell(s) with resources "
                                 f"{describe(chunk[0].resources)} (first: {chunk[0].name}): "
                                 f"{said}{before}") from None
            records += [{"cell": c.id, "executor": "slurm", "job_id": str(job.job_id)}
                        for c, job in zip(chunk, jobs)]
            sweep.record_submissions(records[-len(chunk):])
    return records


def describe(res: Resources) -> str:
    """A resource group in a line: the values set, e.g. `partition=gpu gpus=1 time=04:00:00`."""
    return " ".join(f"{k}={v}" for k, v in asdict(res).items() if v not in (None, {}, 0)) or \
        "(cluster defaults)"


def unreachable_reason() -> str | None:
    """Why jobs cannot be submitted from here (no sbatch, or the controller does not answer),
    or None. Asked before a sweep writes anything."""
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


def max_array_size() -> int:
    """Tasks per array the cluster accepts (MaxArraySize - 1 is the largest index)."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                             timeout=30).stdout
        match = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.M)
        return max(int(match.group(1)) - 1, 1) if match else 1000
    except (OSError, subprocess.SubprocessError):
        return 1000


def sbatch_scripts(sweep: Sweep, cells: list[Cell], name: str,
                   parallelism: int = DEFAULT_ARRAY_PARALLELISM) -> list[Path]:
    """The sbatch scripts `submit` would hand to sbatch, written to SWEEP/sbatch/ (dry-run).
    Rendered by submitit's own function with the same parameters, so they are the same text
    (the array job id in log paths is filled in by SLURM at submission)."""
    out_dir = sweep.root / "sbatch"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, group in enumerate(groups(cells).values()):
        ex = executor(sweep, submitit_parameters(group[0].resources, _job_name(name, group),
                                                 parallelism), scripts_only=True)
        slurm_ex = ex._executor     # the SlurmExecutor inside AutoExecutor
        params = dict(slurm_ex.parameters)
        if len(group) > 1:
            params["map_count"] = len(group)
        text = _make_sbatch_string(command=slurm_ex._submitit_command_str,
                                   folder=slurm_ex.folder, **params)
        path = out_dir / f"array{i:03d}.sh"
        shebang, rest = text.split("\n", 1)
        header = [f"# cells, in array task order: {' '.join(c.id for c in group)}"]
        procs = job_params(group[0]).get("num_processes", 1)
        if procs > 1:   # what TrainCell runs on each node (jobs/train_cell.py)
            cmd = accelerate_command(procs, group[0].resources.nodes, "$SLURM_NODEID",
                                     "<first host of $SLURM_JOB_NODELIST>",
                                     "<free port of node 0>", "SWEEP/cells/<id>")
            header.append("# each node's task runs: " + " ".join(cmd))
        path.write_text("\n".join([shebang, *header, rest]) + "\n")
        paths.append(path)
    return paths


def sacct_states(job_ids: list[str]) -> dict[str, dict]:
    """job id (e.g. '123_4' or '125') → {state, exit_code, raw}, from ONE sacct call."""
    if not job_ids:
        return {}
    # Array tasks are addressed through their array job id; ask once for every array.
    arrays = sorted({j.split("_")[0] for j in job_ids}, key=lambda s: int(s) if s.isdigit() else s)
    cmd = ["sacct", "-X", "-n", "-P", "-D", "-o", "JobID,State,ExitCode,Start,End",
           "-j", ",".join(arrays)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as e:
        raise SlurmError(f"sacct could not be run ({e}); is SLURM reachable here?") from None
    if proc.returncode != 0:
        raise SlurmError(f"{shlex.join(cmd[:6])} ... failed: {proc.stderr.strip()}")
    states: dict[str, dict] = {}
    for line in proc.stdout.splitlines():   # -D lists requeued runs too; the last line wins
        parts = line.split("|")
        if len(parts) < 3:
            continue
        job, state, exit_code = parts[0], parts[1].split()[0], parts[2]
        if "[" in job:   # a pending array summary line like 123_[0-9%4]
            base, rng = job.split("_[", 1)
            for task in _expand_range(rng.rstrip("]").split("%")[0]):
                states[f"{base}_{task}"] = {"state": SACCT_STATES.get(state, state),
                                            "exit_code": exit_code, "raw": state}
            continue
        states[job] = {"state": SACCT_STATES.get(state, state), "exit_code": exit_code,
                       "raw": state}
    return states


def _expand_range(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


def cancel(job_ids: list[str]) -> None:
    if not job_ids:
        return
    try:
        proc = subprocess.run(["scancel", *job_ids], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise SlurmError(f"scancel could not be run ({e}); is SLURM reachable here?") from None
    if proc.returncode != 0:
        said = " / ".join(x.strip() for x in proc.stderr.splitlines() if x.strip())
        raise SlurmError(f"scancel failed: {said or f'exit {proc.returncode}'}")


def log_paths(sweep: Sweep, job_id: str) -> tuple[Path, Path]:
    folder = sweep.root / "slurm" / job_id
    return folder / f"{job_id}_0_log.out", folder / f"{job_id}_0_log.err"
