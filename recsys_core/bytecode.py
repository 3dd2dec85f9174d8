"""Python's bytecode where the installed stack has none beside its sources.

An image installed without .pyc (PYTHONDONTWRITEBYTECODE set, or site-packages read-only)
makes every process compile what it imports from source: on the device's H100 image, importing
torch took 3.3 s and torch._dynamo 7.1-7.6 s, against 1.7 and 2.7 s from bytecode, and the
Beauty cell 27.7 s against 18.3 s (results/benchmarks/grid_throughput_h100/). Such a process
writes and reads its bytecode under a folder of ours instead (Python's pycache prefix)."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

BYTECODE_PROBE = "torch"    # the package whose bytecode says whether the stack has its .pyc
LAUNCHER_CACHE = Path.home() / ".cache" / "recsys_core" / "pycache"


def bytecode_missing() -> bool:
    """True where the probe package's sources have no .pyc beside them (its __init__)."""
    spec = importlib.util.find_spec(BYTECODE_PROBE)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return False
    return not Path(importlib.util.cache_from_source(spec.origin)).exists()


def bytecode_cache(folder: Path, children: bool = True) -> None:
    """Where bytecode is missing, keep it under `folder` (or $RECSYS_PYCACHE): for this
    process, and with `children` for the processes it starts (through the environment). A
    PYTHONPYCACHEPREFIX of the environment's own is kept; where the .pyc are there, nothing
    changes."""
    if os.environ.get("PYTHONPYCACHEPREFIX") or sys.pycache_prefix or not bytecode_missing():
        return
    folder = Path(os.environ.get("RECSYS_PYCACHE") or folder)
    sys.pycache_prefix = str(folder)
    sys.dont_write_bytecode = False
    if children:
        os.environ["PYTHONPYCACHEPREFIX"] = str(folder)
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
