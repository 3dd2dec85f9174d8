"""The dry-run executor: the exact sbatch scripts the SLURM executor would submit, written to
SWEEP/sbatch/, and the cells listed; nothing runs, nothing is submitted. Works where SLURM
is not installed (a laptop preparing a study)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import submitit

from jobs.train_cell import accelerate_command
from launcher.executors.base import Executor, ExecutorError
from launcher.executors.slurm import (DEFAULT_ARRAY_PARALLELISM, MPS_ON_SLURM, groups,
                                      job_folder, job_name, packs, sbatch_parameters)
from launcher.grid import Cell
from launcher.sweep import Sweep, cell_records


class ScriptWriter(submitit.SlurmExecutor):
    """submitit's SLURM executor that only renders sbatch scripts. submitit refuses to build
    its executor without `srun` on the PATH (the `affinity` check), which rendering does not
    need; and it has no public call that renders a script without submitting it, so this
    subclass calls the method its own submission uses to write the script."""

    @classmethod
    def affinity(cls) -> int:
        return 1

    def script(self, array_size: int) -> str:
        if array_size > 1:
            self.parameters["map_count"] = array_size   # as submitit does for an array
        return self._make_submission_file_text(self._submitit_command_str, uid="dry-run")


def sbatch_scripts(sweep: Sweep, cells: list[Cell], name: str,
                   cells_per_job: int | None = None) -> list[Path]:
    """The sbatch scripts the SLURM executor would hand to sbatch, in SWEEP/sbatch/ (the
    array job id in log paths is filled in by SLURM at submission)."""
    out_dir = sweep.root / "sbatch"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, group in enumerate(groups(cells).values()):
        group_packs = packs(group, cells_per_job)
        writer = ScriptWriter(folder=job_folder(sweep))
        writer.update_parameters(**sbatch_parameters(group[0].resources, job_name(name, group),
                                                     DEFAULT_ARRAY_PARALLELISM))
        shebang, rest = writer.script(len(group_packs)).split("\n", 1)
        if len(group_packs) == len(group):
            header = [f"# cells, in array task order: {' '.join(c.id for c in group)}"]
        else:   # what jobs/pack.py runs in each task, one cell after another
            header = [f"# {len(group)} cells in {len(group_packs)} packs; each array task runs "
                      "its pack's cells one after another in one process (jobs/pack.py):"]
            header += [f"#   task {t}: {' '.join(c.id for c in pack)}"
                       for t, pack in enumerate(group_packs)]
        procs = group[0].config.num_processes
        if procs > 1:   # what TrainCell runs on each node (jobs/train_cell.py)
            cmd = accelerate_command(procs, group[0].resources.nodes, "$SLURM_NODEID",
                                     "<first host of $SLURM_JOB_NODELIST>",
                                     "<free port of node 0>", "SWEEP/cells/<id>")
            header.append("# each node's task runs: " + " ".join(cmd))
        path = out_dir / f"array{i:03d}.sh"
        path.write_text("\n".join([shebang, *header, rest]) + "\n")
        paths.append(path)
    return paths


def cells_table(cells: list[Cell]) -> str:
    lines = [f"{'id':<13}{'name':<40}{'gpus':>5} {'time':>10}  resources"]
    for c in cells:
        r = c.resources
        extra = ", ".join(f"{k}={v}" for k, v in (("partition", r.partition), ("mem", r.mem),
                                                   ("cpus", r.cpus), ("nodes", r.nodes))
                          if v not in (None, 1))
        lines.append(f"{c.id:<13}{c.name:<40}{r.gpus:>5} {str(r.time or '-'):>10}  {extra}")
    lines.append(f"{len(cells)} cells")
    return "\n".join(lines)


class DryRunExecutor(Executor):
    name = "dry-run"
    help = "write the sbatch scripts only"
    records_submissions = False

    def preview(self, cells: list[Cell]) -> None:
        if self.options.json:
            sys.stdout.write(json.dumps(cell_records(cells)) + "\n")
        else:
            print(cells_table(cells))

    def submit(self, sweep: Sweep, cells: list[Cell]) -> None:
        if self.options.mps:    # the scripts are SLURM's, which refuses it
            raise ExecutorError(MPS_ON_SLURM)
        scripts = sbatch_scripts(sweep, cells, sweep.manifest()["name"],
                                 self.options.cells_per_job)
        print(f"dry-run: {len(scripts)} sbatch script(s) in {sweep.root / 'sbatch'}; "
              "nothing submitted", file=sys.stderr)
