"""A search's trials in Optuna: one study per model and dataset, all in one journal file in the
sweep directory (SWEEP/tune.journal, appended a line at a time: a kill -9 leaves at most a torn
last line, which Optuna skips). Only the tuner writes it (launcher/tune.py, under its lock).

A trial is a cell: the grid's one cell of its model and dataset with the trial's sampled
parameters, its id a hash of those and of which trial it is (`trial_cell`). Trials are asked
wave by wave (`schedule`); a proposal depends only on the search's seed, the study, the trial's
number and the trials finished before its wave (a sampler seeded per trial, made afresh for
each proposal), so a tuner started again after a crash proposes what the first one would have.

Pruning (`Pruning.advance`) reads each running trial's per-epoch validation curve from its
history.parquet and reports it to the study epoch by epoch. The decisions never depend on when
the files were read: the median pruner compares a trial with the trials completed before its
wave (a wave is told only once all of it is done), so each curve is reported as it grows;
successive halving compares the running trials with each other, so their curves are reported
in lockstep (epoch e of the wave's trials, in trial order, once each has reached epoch e or
ended). A pruned trial gets a stop request in its folder (recsys_core/train/stop.py), which
the job reads after the epoch it is in.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from launcher.grid import Cell, Grid, GridError, cell_id, expand, make_cell
from launcher.search import Dimension, Search
from recsys_core.train.config import ConfigError, TrainConfig
from recsys_core.train.results import read_history
from recsys_core.train.stop import request_stop

JOURNAL = "tune.journal"


def optuna():
    """Optuna, imported when a search runs (0.3 s; `sweep` and `status` do without), quiet
    (its constant-liar TPE is experimental in Optuna 4: one warning per trial otherwise)."""
    import optuna as lib
    lib.logging.set_verbosity(lib.logging.WARNING)
    warnings.filterwarnings("ignore", category=lib.exceptions.ExperimentalWarning)
    return lib


def open_storage(root: Path | None):
    """The journal in `root`, or a storage in memory (a dry run writes nothing)."""
    lib = optuna()
    if root is None:
        return lib.storages.InMemoryStorage()
    from optuna.storages.journal import JournalFileBackend
    return lib.storages.JournalStorage(JournalFileBackend(str(Path(root) / JOURNAL)))


@dataclass
class Study:
    """The trials of one model on one dataset."""
    name: str                     # "model/dataset"
    base: Cell                    # the grid's cell: a trial is it with the sampled parameters
    space: dict[str, Dimension]
    study: Any                    # optuna.Study

    def trials(self) -> dict[int, Any]:
        return {t.number: t for t in self.study.get_trials(deepcopy=False)}


def bases(grid: Grid, cells: list[Cell]) -> dict[str, Cell]:
    """"model/dataset" → the grid's one cell of that model and dataset (GridError if several)."""
    src, metric = str(grid.path), grid.search.metric
    out: dict[str, Cell] = {}
    for c in cells:
        name = f"{c.config.model}/{c.config.dataset}"
        if name in out:
            first = out[name]
            differ = sorted(k for k in {*first.params, *c.params}
                            if first.params.get(k) != c.params.get(k))
            raise GridError(f"{src}: search: the grid has several cells of {name} ({first.name}, "
                            f"{c.name}; they differ in {', '.join(differ)}): a search tunes one "
                            "configuration per model and dataset; fix those parameters or "
                            "search over them")
        k = int(metric.rsplit("@", 1)[1])
        if k not in c.config.ks:
            raise GridError(f"{src}: search.metric: {metric} but cell {c.name} evaluates at "
                            f"ks {c.config.ks}")
        problem = space_problem(c, grid.search.space[c.config.model])
        if problem:
            raise GridError(f"{src}: search.space.{c.config.model}: a trial could draw "
                            f"{problem}; make every value the space allows a valid cell "
                            "(e.g. a choice of widths the heads split)")
        out[name] = c
    return out


def space_problem(base: Cell, space: dict[str, Dimension]) -> str | None:
    """Values the space can draw that make no valid cell with the base cell's other
    parameters (an embedding_dim its num_heads cannot split), or None: found before a trial
    of the budget is spent on them. Every choice, every int of a short range (the ends and
    their neighbours of a long one: parity), each float range's ends; at most 4,096 mixes."""
    def values(d: Dimension) -> list:
        if d.kind == "choice":
            return list(d.values)
        low, high = d.values
        if d.kind == "int":
            return list(range(low, high + 1)) if high - low < 64 else [low, low + 1, high - 1, high]
        return [low, high]
    names = list(space)
    current = base.config.model_dump()
    for mix in itertools.islice(itertools.product(*(values(space[n]) for n in names)), 4096):
        drawn = dict(zip(names, mix))
        try:
            TrainConfig(**{**current, **drawn})
        except ConfigError as e:
            return f"{', '.join(f'{k}={v}' for k, v in drawn.items())} ({e})"
    return None


def pruner(spec: dict[str, Any]):
    lib = optuna()
    if spec["type"] == "median":   # never pruned in its first warmup_epochs epochs
        return lib.pruners.MedianPruner(n_startup_trials=spec["startup_trials"],
                                        n_warmup_steps=spec["warmup_epochs"] + 1)
    if spec["type"] == "successive_halving":
        return lib.pruners.SuccessiveHalvingPruner(min_resource=spec["min_epochs"],
                                                   reduction_factor=spec["reduction_factor"])
    return lib.pruners.NopPruner()


def open_studies(grid: Grid, storage) -> list[Study]:
    """The search's studies in grid order, created in the storage or loaded from it."""
    search: Search = grid.search
    lib = optuna()
    out = []
    for name, base in bases(grid, expand(grid)).items():
        study = lib.create_study(storage=storage, study_name=name, direction="maximize",
                                 pruner=pruner(search.pruner), load_if_exists=True)
        out.append(Study(name, base, search.space[base.config.model], study))
    return out


def schedule(names: list[str], budget: int, parallel: int) -> list[list[tuple[str, int]]]:
    """Every trial's wave, [(study, trial number), ...] a wave: `parallel` places dealt round
    robin over the studies that have trials left, so each wave holds every model alike."""
    asked = dict.fromkeys(names, 0)
    waves: list[list[tuple[str, int]]] = []
    while any(n < budget for n in asked.values()):
        wave: list[tuple[str, int]] = []
        while len(wave) < parallel and any(n < budget for n in asked.values()):
            for name in names:
                if asked[name] < budget and len(wave) < parallel:
                    wave.append((name, asked[name]))
                    asked[name] += 1
        waves.append(wave)
    return waves


def sampler(search: Search, study: str, number: int):
    seed = int.from_bytes(hashlib.sha256(f"{search.seed}/{study}/{number}".encode()).digest()[:4],
                          "big")
    return optuna().samplers.TPESampler(seed=seed, n_startup_trials=search.startup_trials,
                                        constant_liar=True)


def suggest(trial, space: dict[str, Dimension]) -> dict[str, Any]:
    """The trial's value of every dimension: drawn now, or the one it already has (so a trial
    asked by a tuner killed half-way through its parameters gets the rest)."""
    for name, d in space.items():
        if d.kind == "choice":
            trial.suggest_categorical(name, list(d.values))
        elif d.kind == "int":
            trial.suggest_int(name, *d.values)
        else:
            trial.suggest_float(name, *d.values, log=d.kind == "loguniform")
    return {name: trial.params[name] for name in space}


def propose(search: Search, st: Study, number: int):
    """Trial `number` of the study with all its parameters: asked now (it must be the next
    number) or completed where an earlier ask stopped half-way. Returns the FrozenTrial."""
    lib = optuna()
    st.study.sampler = sampler(search, st.name, number)
    existing = st.trials().get(number)
    if existing is None:
        trial = st.study.ask()
        if trial.number != number:
            raise RuntimeError(f"{st.name}: asked for trial {number}, Optuna gave "
                               f"{trial.number} (was the journal written by another process?)")
    elif existing.state == lib.trial.TrialState.RUNNING:
        trial = lib.trial.Trial(st.study, existing._trial_id)   # see Member.handle
    else:
        return existing
    suggest(trial, st.space)
    return st.trials()[number]


def trial_cell(st: Study, number: int, params: dict[str, Any], sweep_name: str) -> Cell:
    """The cell that runs trial `number`: the study's base cell with `params` set."""
    base = st.base
    merged = {**base.params, **params}
    resources = json.dumps(base.resources.identity(), sort_keys=True)
    return make_cell(cell_id(merged, resources, trial=f"{st.name}#{number}"),
                     f"{base.name}-t{number}", merged, base.resources, sweep_name,
                     f"trial {number} of {st.name}")


@dataclass
class Member:
    """A trial of the current wave and the cell that runs it."""
    study: Study
    frozen: Any                   # optuna FrozenTrial (refreshed by `refresh`)
    cell: Cell | None             # None: its values make no valid cell (it FAILs at once)
    cell_dir: Path

    @property
    def label(self) -> str:
        return f"{self.study.name} #{self.frozen.number}"

    @property
    def pruned_epoch(self) -> int | None:
        return self.frozen.user_attrs.get("pruned_epoch")

    def refresh(self) -> None:
        self.frozen = self.study.trials()[self.frozen.number]

    def handle(self):
        """The running trial, to report to and tell. Optuna offers no public way back to a
        trial asked by another process (or a killed tuner): its Trial takes the storage's id."""
        return optuna().trial.Trial(self.study.study, self.frozen._trial_id)


@dataclass
class Pruning:
    """Reports the wave's validation curves to Optuna and prunes (see above)."""
    metric: str
    lockstep: bool                    # successive halving: the wave's curves epoch by epoch
    log: Callable[[str], None] = print
    errors: dict[str, str] = field(default_factory=dict)   # cell id → an unreadable history

    def advance(self, members: list[Member], ended: Callable[[Member], bool]) -> None:
        """`ended(m)`: m's run has ended, its history is final (asked before reading it)."""
        done = {m.cell.id: ended(m) for m in members}
        curves = {}
        for m in members:
            try:
                curves[m.cell.id] = read_history(m.cell_dir, self.metric)
            except (KeyError, ValueError, OSError) as e:
                if m.cell.id not in self.errors:
                    self.log(f"{m.label}: its validation curve cannot be read: {e}")
                self.errors[m.cell.id] = str(e)
                curves[m.cell.id] = []
        reported = {m.cell.id: max(m.frozen.intermediate_values, default=0) for m in members}
        live = [m for m in members if m.pruned_epoch is None]
        epoch = min((reported[m.cell.id] for m in live), default=0) + 1
        while live:
            due = [m for m in live if reported[m.cell.id] < epoch]
            if self.lockstep and any(len(curves[m.cell.id]) < epoch and not done[m.cell.id]
                                     for m in due):
                return                       # one has not reached this epoch yet: wait for it
            for m in due:
                curve = curves[m.cell.id]
                if len(curve) < epoch:
                    continue
                self._report(m, epoch, curve[epoch - 1])
                reported[m.cell.id] = epoch
            live = [m for m in live if m.pruned_epoch is None and (
                len(curves[m.cell.id]) > epoch or (self.lockstep and not done[m.cell.id]))]
            epoch += 1

    def _report(self, m: Member, epoch: int, value: float | None) -> None:
        trial = m.handle()
        trial.report(math.nan if value is None else float(value), epoch)
        if trial.should_prune():
            trial.set_user_attr("pruned_epoch", epoch)
            request_stop(m.cell_dir, f"pruned by `launcher tune` after epoch {epoch} "
                                     f"({self.metric} {value})")
            self.log(f"{m.label}: pruned after epoch {epoch} ({self.metric} {value:.4f})"
                     if value is not None else f"{m.label}: pruned after epoch {epoch}")
        m.refresh()

    def reported_all(self, m: Member) -> bool:
        """Every epoch of m's (final) history is reported: m can be told."""
        try:
            curve = read_history(m.cell_dir, self.metric)
        except (KeyError, ValueError, OSError):
            return True
        return max(m.frozen.intermediate_values, default=0) >= len(curve)
