"""The result files of a run: the contract between a cluster job and everything after it.

`result.json` and a one-row `result.parquet` (same flat record), `history.parquet` (one row per
epoch), `predictions.txt` (top-10 with titles for a few users). All written atomically: a
temporary file in the same directory, then a rename, so a reader never sees half a file.
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
    table = pa.Table.from_pylist([{k: (json.dumps(v) if isinstance(v, list) else v)
                                   for k, v in flat.items()}])
    atomic_write(out / "result.parquet", lambda tmp: pq.write_table(table, tmp, compression="zstd"))
    return flat


def read_result(out: Path) -> dict | None:
    path = Path(out) / "result.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


def write_history(out: Path, history: list[dict]) -> None:
    if not history:
        return
    table = pa.Table.from_pylist([{k: _jsonable(v) for k, v in row.items()} for row in history])
    atomic_write(out / "history.parquet", lambda tmp: pq.write_table(table, tmp))


def write_predictions(out: Path, lines: list[str]) -> None:
    atomic_write_text(out / "predictions.txt", "\n".join(lines) + "\n")
