"""A request from outside a run to end its training after the current epoch: the launcher's
tuner prunes a trial by writing `stop.json` into the trial's run folder. The run reads it
after every epoch and ends as early stopping does (the best checkpoint is tested, the result
written COMPLETED, `stop_request` saying why). A file, not a signal: the tuner and the job share
nothing but the folder (on SLURM the job runs on another machine, the tuner on a login node).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from recsys_core.atomic import atomic_write_text

STOP_FILE = "stop.json"


def request_stop(out: str | Path, reason: str) -> None:
    atomic_write_text(Path(out) / STOP_FILE, json.dumps({"reason": reason, "time": time.time()})
                      + "\n")


def read_stop(out: str | Path) -> str | None:
    """The reason of a stop request in `out`, or None. An unreadable file is still a request."""
    path = Path(out) / STOP_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"{path} (unreadable: {e})"
    try:
        return str(json.loads(text)["reason"])
    except (json.JSONDecodeError, KeyError, TypeError):
        return f"{path} ({text.strip()[:200]!r})"


def stop_requested(out: str | Path, accelerator) -> str | None:
    """read_stop as the main process sees it, shared with every process (several processes
    must agree on the epoch they stop after, or the next all-reduce never completes)."""
    reason = read_stop(out) if accelerator.is_main_process else None
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list
        reason = broadcast_object_list([reason])[0]
    return reason
