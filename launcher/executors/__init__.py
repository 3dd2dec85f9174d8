"""Executors by name: where a sweep's cells run. One module each; a new one is a subclass of
`base.Executor` and one `register` line here (or in the code that adds it, e.g. a test)."""
from __future__ import annotations

from launcher.executors.base import (ACTIVE, FINISHED, STATES, Executor, ExecutorError,
                                     Options, SchedulerState)
from launcher.executors.dryrun import DryRunExecutor
from launcher.executors.local import LocalExecutor
from launcher.executors.slurm import SlurmExecutor

__all__ = ["ACTIVE", "FINISHED", "STATES", "Executor", "ExecutorError", "Options",
           "SchedulerState", "get", "names", "register"]

REGISTRY: dict[str, type[Executor]] = {}


def register(cls: type[Executor]) -> type[Executor]:
    REGISTRY[cls.name] = cls
    return cls


def names(resumable: bool = False) -> tuple[str, ...]:
    """Registered executors, the default (slurm) first; `resumable`: those that run cells."""
    return tuple(n for n, cls in REGISTRY.items() if cls.records_submissions or not resumable)


def get(name: str, options: Options = Options()) -> Executor:
    if name not in REGISTRY:
        raise ValueError(f"unknown executor {name!r}; valid: {', '.join(REGISTRY)}")
    return REGISTRY[name](options)


register(SlurmExecutor)
register(LocalExecutor)
register(DryRunExecutor)
