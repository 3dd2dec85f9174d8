"""`python -m recsys_core.data sample`: a deterministic sample of an interaction log too large
for memory (Music4All-Onion: 252,984,396 listening events).

Order of operations, each on what the one before kept:
1. time window: the events with start <= time < end;
2. user fraction: the users whose salted hash (`user_hash`, read as a number in [0, 1)) is
   below the fraction, so one salt gives nested samples (the users of 1% are among those of 5%);
3. min events: the users with at least N events in the window;
4. last K: each user's K most recent events;
then the rows sorted by user, time, item.

Two streaming passes over the input (`scan.Input.batches`: pieces read on every core, a few
ahead); memory grows with the number of users and with `partition_rows`, not with the input:
1. user (and time, given a window) → each user's events in the window, one row per user.
   Steps 1-3 choose the users from these counts; step 4 needs nothing more than them.
2. user, item, time → the chosen users' events in the window, routed into contiguous ranges of
   the sorted users holding about `partition_rows` events each (one range: kept in memory;
   more: an Arrow IPC file each, in a temporary folder beside the output); range by range
   sorted, cut to the last K, and written as row groups of exactly `row_group_rows` rows.
The output's bytes depend on the input's rows and the options of steps 1-4 only: not on the
batch size, the partitioning, the threads or the order of files and rows (rows that tie on
user, time and item are alike in every column written). A missing user, item or time is an
error, as is a change to the input between the passes that alters the chosen users' counts.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.acero as ac
import pyarrow.compute as pc
import pyarrow.dataset as ds

from recsys_core.data import scan
from recsys_core.data.ranges import Partitions, RowGroups, last_events
from recsys_core.data.fetch import DataError, file_digest

ORDER = ["time window: start <= time < end", "user fraction: salted hash of the user id",
         "min events: counted in the window", "last K: each user's most recent events",
         "sorted by user, time, item"]
WINDOW = "__in_window"   # an internal column
FNV_OFFSET, FNV_PRIME = 0xCBF29CE484222325, 0x100000001B3


@dataclass(frozen=True)
class Options:
    user_col: str = "user"
    item_col: str = "item"
    time_col: str = "timestamp"
    start: int | None = None        # seconds since 1970, inclusive
    end: int | None = None          # exclusive
    fraction: float = 1.0
    salt: str = ""
    min_events: int = 1
    last: int | None = None
    delimiter: str | None = None    # text files; None: a tab if the header has one, else a comma
    # how the work is done, not what it gives: none of these changes the output's bytes
    batch_rows: int = 1 << 20
    partition_rows: int = 4_000_000
    row_group_rows: int = 1 << 20

    def check(self) -> None:
        if len({self.user_col, self.item_col, self.time_col}) < 3:
            raise ValueError("--user-col, --item-col and --time-col must name three different "
                             "columns")
        for name in ("start", "end"):
            if not isinstance(getattr(self, name), (int, type(None))):
                raise ValueError(f"--{name} {getattr(self, name)!r}: seconds since 1970 "
                                 "(scan.parse_time reads ISO 8601)")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"--fraction {self.fraction}: must be in (0, 1]")
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValueError(f"--start {self.start} is not before --end {self.end}")
        for name in ("min_events", "last", "batch_rows", "partition_rows", "row_group_rows"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} {value}: must be at least 1")

    def window(self, t: ds.Expression) -> ds.Expression | None:
        cond = None if self.start is None else t >= self.start
        if self.end is not None:
            cond = t < self.end if cond is None else cond & (t < self.end)
        return cond


def user_hash(users: pa.Array, salt: str) -> np.ndarray:
    """64-bit FNV-1a of the salt's UTF-8 bytes, a NUL byte and each user id as UTF-8 text
    (integers in decimal), then splitmix64's finalizer, over all users at once in numpy."""
    text = users.cast(pa.string())
    n = len(text)
    ends = np.frombuffer(text.buffers()[1], np.int32)[text.offset:text.offset + n + 1]
    data = np.frombuffer(text.buffers()[2], np.uint8) if n else np.zeros(0, np.uint8)
    start, length = ends[:-1], np.diff(ends)
    seed = FNV_OFFSET
    for byte in salt.encode() + b"\0":
        seed = (seed ^ byte) * FNV_PRIME % 2**64
    h = np.full(n, seed, np.uint64)
    for k in range(int(length.max(initial=0))):
        live = np.flatnonzero(length > k)
        h[live] = (h[live] ^ data[start[live] + k]) * np.uint64(FNV_PRIME)
    for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        h = (h ^ (h >> np.uint64(shift))) * np.uint64(factor)
    return h ^ (h >> np.uint64(31))


def user_fraction(users: pa.Array, fraction: float, salt: str) -> np.ndarray:
    """Whether each user is in the sample of `fraction` for `salt`: the top 53 bits of its
    `user_hash`, read as a number in [0, 1), are below `fraction`."""
    if fraction >= 1:
        return np.ones(len(users), bool)
    return (user_hash(users, salt) >> np.uint64(11)).astype(np.float64) / 2.0**53 < fraction


def _execute(inp: scan.Input, run):
    try:
        return run()
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{inp.path}: {e}") from e


def count_users(inp: scan.Input, opts: Options) -> tuple[pa.Array, np.ndarray, dict]:
    """Pass 1: the users with events in the window, sorted, their counts there, and totals.
    Reads the time column only for a window (a missing time is caught by pass 2)."""
    u, t = opts.user_col, opts.time_col
    window = opts.window(scan.seconds(inp, t))
    read, exprs = [u], {u: scan.ids(inp, u)}
    schema = pa.schema([(u, scan.id_type(inp, u))])
    aggregates = [([], "hash_count_all", None, "rows")]
    if window is not None:   # a time out of the window or missing: null, not counted
        read.append(t)
        exprs[WINDOW] = pc.if_else(window, True, None)
        schema = schema.append(pa.field(WINDOW, pa.bool_()))
        aggregates.append((WINDOW, "hash_count", None, WINDOW))
    source = pa.RecordBatchReader.from_batches(
        schema, inp.batches(read, exprs, None, opts.batch_rows))
    nodes = [ac.Declaration("record_batch_reader_source",
                            ac.RecordBatchReaderSourceNodeOptions(source)),
             ac.Declaration("aggregate", ac.AggregateNodeOptions(aggregates, keys=[u]))]
    agg = _execute(inp, lambda: ac.Declaration.from_sequence(nodes).to_table(use_threads=True))
    rows = agg["rows"].to_numpy()
    if agg[u].null_count:
        missing = pc.sum(pc.filter(agg["rows"], agg[u].is_null())).as_py()
        raise DataError(f"{inp.path}: {missing:,} rows have no {u!r}")
    counts = agg[WINDOW].to_numpy() if window is not None else rows
    present = counts > 0
    users, counts = agg[u].filter(pa.array(present)), counts[present]
    order = pc.sort_indices(users).to_numpy()
    stats = {"rows_in": int(rows.sum()), "users_in": len(rows),
             "rows_in_window": int(counts.sum()), "users_in_window": len(users)}
    return users.take(pa.array(order)).combine_chunks(), counts[order].astype(np.int64), stats


def events(inp: scan.Input, opts: Options, users: pa.Array | None) -> Iterator[pa.RecordBatch]:
    """Pass 2: the events of `users` (None: of every user) in the window."""
    u, i, t = opts.user_col, opts.item_col, opts.time_col
    text = tuple(c for c in (u, i) if inp.format == "parquet"
                 and not pa.types.is_integer(inp.column_type(c)))
    secs = scan.seconds(inp, t)
    keep = opts.window(secs)
    if users is not None:
        member = pc.is_in(ds.field(u), value_set=users)
        keep = member if keep is None else keep & member
    if keep is not None:   # rows without an item or a time pass, to be seen and refused
        keep = keep | ds.field(i).is_null() | ds.field(t).is_null()
    columns = {u: scan.ids(inp, u), i: scan.ids(inp, i), t: secs}
    return inp.batches([u, i, t], columns, keep, opts.batch_rows, dictionary=text)


@contextmanager
def staged(out: Path):
    """Temporary output, manifest and spill folder beside `out`; renamed into place when the
    block completes, removed whatever happens."""
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}-")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)    # as a plain open() would have made it, not mkstemp's 0600
    tmp_json = Path(tmp + ".json")
    spill = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-spill-"))
    try:
        yield Path(tmp), tmp_json, spill
        os.replace(tmp, out)
        os.replace(tmp_json, manifest_path(out))
    finally:
        Path(tmp).unlink(missing_ok=True)
        tmp_json.unlink(missing_ok=True)
        shutil.rmtree(spill, ignore_errors=True)


def manifest_path(out: str | Path) -> Path:
    return Path(str(out) + ".json")


def sample(input_path: str | Path, out: str | Path, opts: Options = Options()) -> dict:
    """Writes the sample of `input_path` to `out` (Parquet, zstd) and its manifest beside it
    (`out` + `.json`); returns the manifest."""
    opts.check()
    start, out = time.perf_counter(), Path(out)
    if Path(input_path).is_dir() and out.resolve().is_relative_to(Path(input_path).resolve()):
        raise DataError(f"--out {out}: inside the input directory {input_path}, where a later "
                        "sample would read it as input")
    if out.is_file() and Path(input_path).is_file() and out.samefile(input_path):
        raise DataError(f"--out {out}: the input file itself, which the sample would replace")
    if not out.parent.is_dir() or out.is_dir():
        raise DataError(f"--out {out}: " + ("a directory" if out.is_dir() else
                                            f"no directory {out.parent}"))
    inp = scan.open_input(input_path, (opts.user_col, opts.item_col, opts.time_col), opts.delimiter)
    source = scan.fingerprint(inp)
    users, counts, stats = count_users(inp, opts)
    pass1 = time.perf_counter()
    in_fraction = user_fraction(users, opts.fraction, opts.salt)
    chosen = in_fraction & (counts >= opts.min_events)
    kept, kept_counts = users.filter(pa.array(chosen)), counts[chosen]
    schema = pa.schema([(opts.user_col, scan.id_type(inp, opts.user_col)),
                        (opts.item_col, scan.id_type(inp, opts.item_col)),
                        (opts.time_col, pa.int64())])
    with staged(out) as (tmp, tmp_json, spill):
        parts = Partitions(kept, kept_counts, opts.partition_rows, schema, spill)
        reader = events(inp, opts, None if chosen.all() else kept)

        def route():
            for batch in reader:
                for k, name in ((1, opts.item_col), (2, opts.time_col)):
                    if batch.column(k).null_count:
                        raise DataError(f"{inp.path}: rows without {name!r}")
                parts.add(batch)
        _execute(inp, route)
        pass2 = time.perf_counter()
        writer, rows_out, items = RowGroups(tmp, schema, opts.row_group_rows), 0, []
        for table, range_users, range_counts in parts.ranges():
            table = last_events(table, range_users, range_counts, opts.last)
            rows_out += table.num_rows
            items.append(pc.unique(table[opts.item_col]))
            writer.write(table)
        writer.close()
        done = time.perf_counter()
        manifest = {
            "command": "python -m recsys_core.data sample",
            "input": source,
            "parameters": {k: v for k, v in asdict(opts).items()
                           if k not in ("batch_rows", "partition_rows", "row_group_rows")},
            "order": ORDER,
            "execution": {"batch_rows": opts.batch_rows, "partition_rows": opts.partition_rows,
                          "row_group_rows": opts.row_group_rows, "ranges": parts.n,
                          "pyarrow": pa.__version__},
            "rows": {"in": stats["rows_in"], "in_window": stats["rows_in_window"],
                     "of_chosen_users": int(kept_counts.sum()), "out": rows_out},
            "users": {"in": stats["users_in"], "in_window": stats["users_in_window"],
                      "in_fraction": int(in_fraction.sum()), "out": len(kept)},
            "items_out": len(pc.unique(pa.chunked_array(items, schema.field(1).type))),
            "output": {"file": out.name, "bytes": tmp.stat().st_size,
                       "sha256": file_digest(tmp, "sha256")},
            "seconds": {"pass1": round(pass1 - start, 3), "pass2": round(pass2 - pass1, 3),
                        "sort_write": round(done - pass2, 3),
                        "total": round(time.perf_counter() - start, 3)},
        }
        tmp_json.write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest
