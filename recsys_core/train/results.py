"""The result files of a run: the contract between a cluster job and everything after it.

`result.json` (the flat record: status, config, metrics, timings; the ONE record of a run, read
by status, resume, aggregate and the analyses through `read_result`), `history.parquet` (one
row per epoch), `predictions.txt` (top-10 with titles for a few users). All written
atomically: a temporary file in the same directory, then a rename, so a reader never sees half
a file.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from recsys_core.atomic import atomic_write, atomic_write_text

STATUSES = ("COMPLETED", "FAILED")


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)   # flat files: nested values as JSON text
    return value


def write_result(out: Path, record: dict) -> dict:
    if record.get("status") not in STATUSES:
        raise ValueError(f"result status {record.get('status')!r}; valid: {', '.join(STATUSES)}")
    flat = {k: _jsonable(v) for k, v in record.items()}
    atomic_write_text(out / "result.json", json.dumps(flat, indent=1, sort_keys=True) + "\n")
    return flat


def read_result(out: Path) -> dict | None:
    """A run's result record; None if it has none yet. A file that is not a result record
    (truncated, edited by hand) raises ValueError naming the file."""
    path = Path(out) / "result.json"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(record, dict) or record.get("status") not in STATUSES:
        raise ValueError(f"{path}: not a result record (status "
                         f"{record.get('status') if isinstance(record, dict) else None!r})")
    return record


def write_history(out: Path, history: list[dict]) -> None:
    if not history:
        return
    table = pa.Table.from_pylist([{k: _jsonable(v) for k, v in row.items()} for row in history])
    atomic_write(out / "history.parquet", lambda tmp: pq.write_table(table, tmp))


def write_predictions(out: Path, lines: list[str]) -> None:
    atomic_write_text(out / "predictions.txt", "\n".join(lines) + "\n")
