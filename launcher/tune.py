"""`python -m launcher tune GRID`: an equal-budget hyper-parameter search (Optuna: TPE, median or
successive-halving pruning) on the launcher's own cells, executors, result files and resume.

GRID has a `search:` block (launcher/search.py). The sweep directory is an ordinary sweep (its
manifest gains each wave's trial cells: `status`, `cancel`, `aggregate` work on it) plus the
trials in tune.journal (launcher/trials.py). The tuner goes wave after wave:

  1. the wave's trials are asked (or found: a tuner started again continues the wave where the
     last one stopped), each made a cell, and the cells not yet run, or whose run ended without
     a result, are submitted together (a SLURM array per resource group; locally `parallel` at
     a time);
  2. while they run, each one's validation curve (history.parquet) is reported to its study
     epoch by epoch and the pruner asked; a pruned trial's job is asked to stop (stop.json in
     its folder, read by the job after every epoch: it works on SLURM, where the tuner is not in
     the job's process, wherever the folder is shared, as the result files already are);
  3. once none of its cells is queued or running, each trial is told: COMPLETE with its result's
     validation metric, PRUNED at the epoch it was pruned after, FAIL where the run failed (the
     trainer's reason); a run that ended without a result (killed, cancelled, timed out) is
     submitted again, continuing from its checkpoint, at most MAX_ATTEMPTS times in all.

A tuner holds SWEEP/.tune.lock while it runs, so a second `tune` on the directory stops at once
(exit 2) rather than running trials twice. Killed (kill -9, a lost login node), it leaves the
journal, the manifest and the jobs; the same command continues: it waits for the trials still
running and asks nothing twice.
"""
from __future__ import annotations

import contextlib
import fcntl
import math
import os
import socket
import threading
import time
from pathlib import Path
from typing import Callable

from launcher import executors
from launcher.executors import ACTIVE
from launcher.grid import Grid, expand
from launcher.status import cell_states
from launcher.sweep import Sweep
from launcher.tune_report import describe
from launcher.trials import (JOURNAL, Member, Pruning, Study, bases, open_storage, open_studies,
                             optuna, propose, schedule, trial_cell)
from recsys_core.cli import INTERRUPTED
from recsys_core.train.config import ConfigError
from recsys_core.train.results import read_result

MAX_ATTEMPTS = 3         # runs of one trial that may end without a result (killed, cancelled)
POLL_S = 1.0             # histories and result files are read this often
ASK_EVERY_S = (2.0, 60.0)   # the scheduler (sacct) is asked at growing intervals in between
LOCK = ".tune.lock"


class TuneError(RuntimeError):
    """One line for the user: exit 2."""


@contextlib.contextmanager
def tune_lock(root: Path):
    """Held while a tuner runs this directory; a second one fails at once, saying who holds it.
    The kernel drops the lock of a killed process: nothing stale stays behind."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise TuneError(f"{root} is being tuned by {f.read().strip() or 'another process'}; "
                            f"`python -m launcher tune status {root}` shows how far it is"
                            ) from None
        f.truncate(0)
        f.write(f"`launcher tune` pid {os.getpid()} on {socket.gethostname()} since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        yield


def settings(grid: Grid, studies: list[str]) -> dict:
    return {**grid.search.settings(), "studies": studies}


def prepare(out: Path, grid: Grid, executor: str, trials: int, parallel: int) -> Sweep:
    """The sweep directory of this search: made, or checked to hold this same search."""
    names = list(bases(grid, expand(grid)))
    wanted = settings(grid, names)
    sweep = Sweep(out)
    if sweep.manifest_path.exists():
        manifest = sweep.manifest()
        if manifest["executor"] == "dry-run" and not (out / JOURNAL).exists():
            sweep.manifest_path.unlink()           # a dry run's first wave: nothing ran
        elif "tune" not in manifest:
            raise TuneError(f"{out} holds a sweep, not a search; choose another --out")
        elif manifest["tune"]["settings"] != wanted:
            have = manifest["tune"]["settings"]
            differ = [k for k in wanted if have.get(k) != wanted[k]]
            raise TuneError(f"{out} holds another search (its {', '.join(differ)} differ from "
                            f"{grid.path}'s); choose another --out")
    tune = {"settings": wanted, "trials": trials, "parallel": parallel}
    if not sweep.manifest_path.exists():
        return Sweep.create(out, grid.path, grid.name, [], executor, extra={"tune": tune})
    sweep.update_manifest(tune=tune)
    return sweep


def _params(params: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in params.items())


class Tuner:
    def __init__(self, sweep: Sweep, grid: Grid, studies: list[Study],
                 executor: executors.Executor, trials: int, parallel: int,
                 log: Callable[[str], None] = print):
        self.sweep, self.grid, self.search = sweep, grid, grid.search
        self.studies = {s.name: s for s in studies}
        self.executor, self.trials, self.parallel, self.log = executor, trials, parallel, log
        self.pruning = Pruning(self.search.metric,
                               self.search.pruner["type"] == "successive_halving", log)
        self.state = optuna().trial.TrialState

    # --- trials -------------------------------------------------------------------------------

    def member(self, name: str, number: int) -> Member | None:
        """Trial `number` of a study with its cell (proposed now if it was not yet); None if its
        parameters make no valid cell (the trial FAILs)."""
        st = self.studies[name]
        frozen = propose(self.search, st, number)
        try:
            cell = trial_cell(st, number, frozen.params, self.grid.name)
        except ConfigError as e:
            if frozen.state == self.state.RUNNING:
                self.tell(Member(st, frozen, None, self.sweep.root), self.state.FAIL, str(e))
            return None
        m = Member(st, frozen, cell, self.sweep.cell_dir(cell.id))
        if frozen.state == self.state.RUNNING and "cell" not in frozen.user_attrs:
            m.handle().set_user_attr("cell", cell.id)
            m.refresh()
        return m

    def tell(self, m: Member, state, reason: str | None = None, value: float | None = None,
             attrs: dict | None = None) -> None:
        handle = m.handle()
        for key, v in {**(attrs or {}), "reason": reason}.items():
            if v is not None:
                handle.set_user_attr(key, v)
        m.study.study.tell(m.frozen.number, value, state=state)
        m.refresh()
        shown = {self.state.COMPLETE: f"{self.search.metric} {value:.4f}" if value is not None
                 else "",
                 self.state.PRUNED: f"after epoch {m.pruned_epoch}",
                 self.state.FAIL: reason or ""}[state]
        self.log(f"{m.label}: {state.name} {shown}  ({_params(m.frozen.params)})")

    def ended(self, m: Member, latest: dict[str, dict]) -> bool:
        """m's run left a result file after its latest submission."""
        sub = latest.get(m.cell.id)
        try:
            return sub is not None and \
                (m.cell_dir / "result.json").stat().st_mtime >= sub["time"] - 1
        except OSError:
            return False

    def outcome(self, m: Member, latest: dict[str, dict]) -> tuple | None:
        """(state, reason, value, attrs) of m once it has one: pruned, or its run ended and
        every epoch of it is reported."""
        if m.pruned_epoch is not None:
            return self.state.PRUNED, None, None, {"epochs": m.pruned_epoch}
        if not self.ended(m, latest) or not self.pruning.reported_all(m):
            return None
        try:
            result = read_result(m.cell_dir) or {}
        except ValueError as e:
            result = {"status": "FAILED", "reason": str(e)}
        value = result.get(self.search.metric)
        if result.get("status") == "COMPLETED" and isinstance(value, float) and \
                math.isfinite(value):
            return self.state.COMPLETE, None, value, {"epochs": result.get("epochs_run"),
                                                      "best_epoch": result.get("best_epoch")}
        reason = str(result.get("reason") or f"no {self.search.metric} in its result")
        return self.state.FAIL, reason.strip().splitlines()[-1][:300], None, {}

    # --- waves --------------------------------------------------------------------------------

    def run(self) -> int:
        waves = schedule(list(self.studies), self.trials, self.parallel)
        for i, wave in enumerate(waves):
            members = [m for m in (self.member(n, k) for n, k in wave) if m is not None]
            todo = [m for m in members if m.frozen.state == self.state.RUNNING]
            if not todo:
                continue
            self.log(f"wave {i + 1}/{len(waves)}: " + ", ".join(m.label for m in todo))
            if self.run_wave(todo) == INTERRUPTED:
                return INTERRUPTED
        return 0

    def run_wave(self, members: list[Member]) -> int:
        """Run the wave's trials to an outcome each, then tell them all at once (so no trial of
        a wave is pruned against another of the same wave, whatever the timing)."""
        outcomes: dict[str, tuple] = {}
        while True:
            pending = [m for m in members if m.cell.id not in outcomes]
            latest, rows = self.sweep.latest_submissions(), self.cell_states()
            todo = []
            for m in pending:
                row = rows.get(m.cell.id, {})
                if m.pruned_epoch is not None or self.ended(m, latest) or \
                        row.get("state") in ACTIVE:
                    continue
                runs = sum(1 for s in self.sweep.submissions() if s["cell"] == m.cell.id)
                if runs >= MAX_ATTEMPTS:
                    outcomes[m.cell.id] = (self.state.FAIL, f"{runs} runs ended without a "
                                           f"result; the last {row.get('state')}: "
                                           f"{row.get('reason')}", None, {})
                else:
                    todo.append(m)
            pending = [m for m in pending if m.cell.id not in outcomes]
            if todo and self.submit(todo, pending) == INTERRUPTED:
                return INTERRUPTED
            self.wait_idle(pending)
            latest = self.sweep.latest_submissions()
            self.pruning.advance(pending, lambda m: self.ended(m, latest))
            for m in pending:
                found = self.outcome(m, latest)
                if found is not None:
                    outcomes[m.cell.id] = found
            if len(outcomes) == len(members):
                for m in members:
                    self.tell(m, *outcomes[m.cell.id])
                return 0

    def submit(self, todo: list[Member], members: list[Member]) -> int:
        """Submit the cells (under the sweep's lock, as `sweep` does) and see them through
        (the local executor runs them here), pruning meanwhile in a thread."""
        cells = [m.cell for m in todo]
        with self.sweep.lock():
            self.sweep.add_cells(cells)
            self.executor.submit(self.sweep, cells)
        stop = threading.Event()

        def prune() -> None:
            while not stop.wait(POLL_S):
                latest = self.sweep.latest_submissions()
                self.pruning.advance(members, lambda m: self.ended(m, latest))

        thread = threading.Thread(target=prune, daemon=True, name="pruning")
        thread.start()
        try:
            return self.executor.wait(self.sweep, cells)
        finally:
            stop.set()
            thread.join()

    def wait_idle(self, members: list[Member]) -> None:
        """Until every member is pruned, has its result, or is neither queued nor running."""
        gap, ask_at = ASK_EVERY_S[0], time.time()
        while True:
            latest = self.sweep.latest_submissions()
            self.pruning.advance(members, lambda m: self.ended(m, latest))
            waiting = [m for m in members if m.pruned_epoch is None and not self.ended(m, latest)]
            if not waiting:
                return
            if time.time() >= ask_at:
                rows = self.cell_states()
                if all(rows.get(m.cell.id, {}).get("state") not in ACTIVE for m in waiting):
                    return
                gap, ask_at = min(gap * 1.5, ASK_EVERY_S[1]), time.time() + gap
            time.sleep(POLL_S)

    def cell_states(self) -> dict[str, dict]:
        try:
            return {r["id"]: r for r in cell_states(self.sweep)}
        except executors.ExecutorError as e:
            raise TuneError(f"{e}; the trials go on: run the same `tune` again later") from None


def run_search(grid: Grid, out: Path, executor: executors.Executor, trials: int,
               parallel: int, log: Callable[[str], None] = print) -> tuple[Sweep, int]:
    """Run (or continue) the search into `out`; (the sweep, the exit code)."""
    with tune_lock(out):
        sweep = prepare(out, grid, executor.name, trials, parallel)
        studies = open_studies(grid, open_storage(out))
        return sweep, Tuner(sweep, grid, studies, executor, trials, parallel, log).run()


def dry_run(grid: Grid, out: Path, executor: executors.Executor, trials: int,
            parallel: int) -> None:
    """The first wave, proposed in memory as the search would propose it (nothing recorded):
    listed, and its sbatch scripts written to OUT/sbatch/ (the dry-run executor)."""
    if (out / JOURNAL).exists():
        raise TuneError(f"{out} holds a search that has run; dry-run into another --out")
    studies = {s.name: s for s in open_studies(grid, open_storage(None))}
    waves = schedule(list(studies), trials, parallel)
    cells = []
    if not executor.options.json:
        print(f"the first of {len(waves)} waves ({describe_budget(grid, trials, parallel)}):")
    for name, number in waves[0]:
        frozen = propose(grid.search, studies[name], number)
        cells.append(trial_cell(studies[name], number, frozen.params, grid.name))
        if not executor.options.json:
            print(f"  {name} #{number}: {_params(frozen.params)}")
    executor.preview(cells)
    tune = {"settings": settings(grid, list(studies)), "trials": trials, "parallel": parallel}
    sweep = Sweep.create(out, grid.path, grid.name, cells, executor.name, write_cells=False,
                         extra={"tune": tune})
    executor.submit(sweep, cells)


def describe_budget(grid: Grid, trials: int, parallel: int) -> str:
    return describe({"settings": grid.search.settings(), "trials": trials, "parallel": parallel})
