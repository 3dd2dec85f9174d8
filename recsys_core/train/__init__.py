"""Training one cell: `run(TrainConfig)` (loop.py) and the CLI `python -m recsys_core.train`."""
from recsys_core.train.config import ConfigError, TrainConfig

__all__ = ["ConfigError", "TrainConfig", "run"]


def run(cfg: TrainConfig, progress=None, hooks=None, **kwargs) -> dict:
    """loop.run: keyword arguments `prepared` (data kept across runs) and `job` (what the
    job records of the cell)."""
    from recsys_core.train.hooks import DebugHooks
    from recsys_core.train.loop import run as _run
    return _run(cfg, progress, hooks or DebugHooks(), **kwargs)
