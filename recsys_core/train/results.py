"""The result files of a run: the contract between a cluster job and everything after it.

`result.json` is the ONE record of a run: flat JSON (nested values as JSON text), with status,
every config value, metrics, timings and versions. `FIELDS` declares, once, the fields that
the code after the trainer relies on and their types; a record may hold any others, which are
kept as they are. One writer, `write_result`; two readers, both checking a record against
`FIELDS`: `read_result` (one run: status, resume, evaluation, the analyses) and
`read_results` (a sweep's cells at once, with a cache: aggregate, its plots, the analyses of a
sweep). Besides it `history.parquet` (one row per epoch, rewritten after each: the launcher's
tuner reads a running trial's validation curve from it, `read_history`) and `predictions.txt`
(top-10 with titles for a few users). All written atomically: a temporary file in the same
directory, then a rename, so a reader never sees half a file.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.json as pj
import pyarrow.parquet as pq

from recsys_core.atomic import atomic_write, atomic_write_text

STATUSES = ("COMPLETED", "FAILED")
TEXT, NUMBER, NUMBERS = pa.string(), pa.float64(), pa.list_(pa.float64())
# Every field is optional (null) but the status: a run that fails early records little.
FIELDS: dict[str, pa.DataType] = {
    "status": TEXT,                         # one of STATUSES
    "reason": TEXT,                         # why it FAILED
    "stop_request": TEXT,                   # why training was stopped from outside (train/stop.py)
    **{f"{split}_{metric}@10": NUMBER for split in ("test", "val")
       for metric in ("recall", "ndcg", "mrr")},
    "val_recall@10_by_epoch": NUMBERS,      # the validation curve (the plots)
    "cold_users": NUMBER,                   # cold-start users evaluated (train/cold_start.py)
    **{f"cold_{who}test_{metric}@10": NUMBER for who in ("", "pop_")
       for metric in ("recall", "ndcg")},
    # not the recorded analyses' `longtail_*`, `geometry_*` (train/recorded.py): why in
    # launcher/collect.py
    "best_epoch": NUMBER,
    "epochs_run": NUMBER,
    "params_total": NUMBER,
    "num_processes": NUMBER,
    "epoch_time_s": NUMBER,                 # mean over the epochs run
    "epoch_time_median_s": NUMBER,          # the steady epoch (no first-epoch compiles)
    "time_to_best_s": NUMBER,               # seconds of the epochs up to the best one
    "wall_time_s": NUMBER,                  # run() began → result written
    # where a cell's time went: before run() (the job: jobs/timing.py), then inside it (loop.py)
    "time_queue_s": NUMBER,                 # SLURM: submitted → job started; null elsewhere
    "time_start_s": NUMBER,                 # process started, or cell handed to a worker → run()
    **{f"time_{part}_s": NUMBER for part in ("setup", "epochs", "saving", "final")},
    "runner": TEXT,                         # process-per-cell, worker or pack (jobs/worker.py)
    "runner_cells_before": NUMBER,          # cells the same process ran before this one
    "mps_pipe_dir": TEXT,                   # the process's CUDA_MPS_PIPE_DIRECTORY (--mps), if set
    "cells_per_gpu": NUMBER,                # local executor: cells that may share its GPU at once
    # what the analyses rebuild a run's model from
    "model": TEXT,
    "dataset": TEXT,
    "dataset_items": NUMBER,
    "max_len": NUMBER,
    "embedding_dim": NUMBER,
    "num_heads": NUMBER,
    "num_blocks": NUMBER,
}
SCHEMA = pa.schema(list(FIELDS.items()))


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_ACCEPTS = {TEXT: lambda v: isinstance(v, str), NUMBER: _number,
            NUMBERS: lambda v: isinstance(v, list) and all(x is None or _number(x) for x in v)}


def check_record(record, source: str) -> dict:
    """record, if it is a result record: a JSON object with a status in STATUSES and every
    field of FIELDS that it has of its type. Else ValueError naming source."""
    status = record.get("status") if isinstance(record, dict) else None
    if status not in STATUSES:
        raise ValueError(f"{source}: not a result record (status {status!r}; valid: "
                         f"{', '.join(STATUSES)})")
    wrong = [f"{k}={record[k]!r} (expected {t})" for k, t in FIELDS.items()
             if record.get(k) is not None and not _ACCEPTS[t](record[k])]
    if wrong:
        raise ValueError(f"{source}: not a result record: {'; '.join(wrong)}")
    return record


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)   # flat files: nested values as JSON text
    return value


def write_result(out: Path, record: dict) -> dict:
    flat = check_record({k: _jsonable(v) for k, v in record.items()}, f"result for {out}")
    atomic_write_text(out / "result.json", json.dumps(flat, indent=1, sort_keys=True) + "\n")
    return flat


def read_result(out: Path) -> dict | None:
    """A run's result record; None if it has none yet. A file that is not a result record
    (truncated, edited by hand) raises ValueError naming the file."""
    path = Path(out) / "result.json"
    try:
        text = path.read_text()
    except (FileNotFoundError, NotADirectoryError):    # the latter: `out` is a file
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    return check_record(record, str(path))


# --- many cells at once -------------------------------------------------------------------

_PARSE = pj.ParseOptions(explicit_schema=SCHEMA, unexpected_field_behavior="infer")
_STAMPS = ["_size", "_mtime_ns"]


def read_results(cells_dir: str | Path, cell_ids, cache: Path | None = None):
    """The result.json of cells_dir/<id>/ for every id that has one, as (frame, problems):
    a row per cell with a `cell` column (the id), FIELDS typed as declared (null where a file
    lacks one) and every other field as the files have it; problems = {path: why} for the
    files that are not result records (skipped). Parsed by pyarrow's JSON reader in ONE call
    over all files' bytes: ~0.05 ms a file on a small VM.

    With `cache` (a folder), the rows are kept there with each file's size and mtime, so that
    reading the cells again (while a sweep runs, or after a resume) costs a stat per file and
    decodes only new or changed files."""
    stamps, folder = {}, str(cells_dir)     # strings: pathlib costs ~10 µs a path
    for cid in cell_ids:
        try:
            st = os.stat(f"{folder}/{cid}/result.json")
        except FileNotFoundError:
            continue
        stamps[cid] = (st.st_size, st.st_mtime_ns)
    key = hashlib.sha256(str(SCHEMA).encode()).hexdigest()[:12]
    cache_file = Path(cache) / f"results-{key}.parquet" if cache is not None else None
    cached = _cached_rows(cache_file, stamps)
    known = set(cached.column("cell").to_pylist()) if cached is not None else set()
    fresh, problems = _parse_files(folder, [c for c in stamps if c not in known], stamps)
    try:
        rows = pa.concat_tables([cached, fresh], promote_options="permissive") \
            if cached is not None else fresh
    except pa.ArrowException:    # a field's type changed since the cache was written
        cached, (rows, problems) = None, _parse_files(folder, list(stamps), stamps)
    if cache_file is not None and (fresh.num_rows or cached is None):
        try:
            cache_file.parent.mkdir(exist_ok=True)
            atomic_write(cache_file, lambda tmp: pq.write_table(rows, tmp))
        except OSError:
            pass    # a read-only sweep folder: no cache, same results
    return rows.drop_columns(_STAMPS).to_pandas(), problems


def _cached_rows(cache_file: Path | None, stamps: dict) -> pa.Table | None:
    """The cached rows whose file has not changed since (same size and mtime)."""
    if cache_file is None:
        return None
    try:
        table = pq.read_table(cache_file)
        keep = [stamps.get(c) == (s, m) for c, s, m in
                zip(*(table.column(n).to_pylist() for n in ["cell", *_STAMPS]))]
    except (OSError, pa.ArrowException, KeyError, ValueError):
        return None
    return table.filter(pa.array(keep, pa.bool_()))


def _parse_files(folder: str, cell_ids: list[str], stamps: dict) -> tuple[pa.Table, dict]:
    blobs, cells, paths, bad = [], [], [], {}
    for cid in cell_ids:
        path = f"{folder}/{cid}/result.json"
        try:
            with open(path, "rb") as f:   # pretty-printed JSON: raw newlines are only whitespace
                blobs.append(f.read().replace(b"\n", b" ").strip())
        except OSError as e:
            bad[path] = f"{type(e).__name__}: {e}"
            continue
        cells.append(cid)
        paths.append(path)
    try:
        table = _parse(blobs)
    except pa.ArrowException:
        keep = []
        for i, blob in enumerate(blobs):   # find the bad files, then read the rest in one call
            try:
                if not blob.startswith(b"{"):
                    raise pa.ArrowInvalid("not a JSON object")
                _parse([blob])
                keep.append(i)
            except pa.ArrowException as e:
                bad[paths[i]] = f"{type(e).__name__}: {e}"
        blobs, cells, paths = ([x[i] for i in keep] for x in (blobs, cells, paths))
        try:
            table = _parse(blobs)
        except pa.ArrowException:
            table = _parse_apart(blobs)
    statuses = table.column("status").to_pylist()
    ok = [s in STATUSES for s in statuses]
    for path, status, good in zip(paths, statuses, ok):
        if not good:
            bad[path] = f"not a result record (status {status!r})"
    cells = [c for c, good in zip(cells, ok) if good]
    table = table.filter(pa.array(ok, pa.bool_())).append_column("cell", pa.array(cells, TEXT))
    for i, name in enumerate(_STAMPS):
        table = table.append_column(name, pa.array([stamps[c][i] for c in cells], pa.int64()))
    return table, bad


def _parse(blobs: list[bytes]) -> pa.Table:
    if not blobs:
        return SCHEMA.empty_table()
    table = pj.read_json(pa.BufferReader(b"\n".join(blobs)), parse_options=_PARSE)
    if table.num_rows != len(blobs):
        raise pa.ArrowInvalid(f"{table.num_rows} records from {len(blobs)} files")
    return table


def _parse_apart(blobs: list[bytes]) -> pa.Table:
    """Files that each parse but not together: a field outside FIELDS holds a number in one
    and text in another. Such a field is kept as JSON text."""
    records = [json.loads(b) for b in blobs]
    names = list(dict.fromkeys([*FIELDS, *(k for r in records for k in r)]))
    columns = {}
    for name in names:
        values = [r.get(name) for r in records]
        try:
            columns[name] = pa.array(values, FIELDS.get(name))
        except (pa.ArrowException, TypeError, ValueError):
            columns[name] = pa.array([None if v is None else json.dumps(v) for v in values], TEXT)
    return pa.table(columns)


def write_history(out: Path, history: list[dict]) -> None:
    if not history:
        return
    table = pa.Table.from_pylist([{k: _jsonable(v) for k, v in row.items()} for row in history])
    atomic_write(out / "history.parquet", lambda tmp: pq.write_table(table, tmp))


def read_history(out: Path, column: str) -> list[float | None]:
    """One column of a run's history.parquet, epoch by epoch ([] while it has none). A file
    being replaced is never half-read: it is replaced atomically and read here through one open
    (pq.read_table on a path opens it again for the pages, which then may be the next file's).
    A column it lacks raises KeyError."""
    try:
        data = (Path(out) / "history.parquet").read_bytes()    # a few kB
    except FileNotFoundError:
        return []
    table = pq.read_table(pa.BufferReader(data))
    if column not in table.column_names:
        raise KeyError(f"{out}/history.parquet has no column {column!r}")
    epochs, values = table.column("epoch").to_pylist(), table.column(column).to_pylist()
    if epochs != list(range(1, len(epochs) + 1)):
        raise ValueError(f"{out}/history.parquet: epochs {epochs} are not 1..{len(epochs)}")
    return values


def write_predictions(out: Path, lines: list[str]) -> None:
    atomic_write_text(out / "predictions.txt", "\n".join(lines) + "\n")
