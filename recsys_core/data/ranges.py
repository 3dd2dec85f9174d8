"""Pass 2 of `sample` after the scan: the chosen users' events by contiguous ranges of the
sorted users (held in memory, or spilled to Arrow IPC files), each range sorted and cut to the
users' last events, and the Parquet writer of exact row groups that the output goes through."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys_core.data.fetch import DataError

ZSTD_LEVEL = 3


class Partitions:
    """The chosen users' events by contiguous ranges of the sorted users: in memory when one
    range holds them all, else an Arrow IPC stream file per range in `folder`."""

    def __init__(self, users: pa.Array, counts: np.ndarray, budget: int, schema: pa.Schema,
                 folder: Path):
        starts = np.cumsum(counts) - counts
        _, self.of_user = np.unique(starts // budget, return_inverse=True)
        self.n = int(self.of_user.max()) + 1 if len(users) else 1
        self.users, self.counts, self.schema = users, counts, schema
        self.batches: list[pa.RecordBatch] = []
        self.files = [folder / f"range-{p:05d}.arrows" for p in range(self.n)] if self.n > 1 else []
        self.writers = [pa.ipc.new_stream(str(f), schema) for f in self.files]

    def add(self, batch: pa.RecordBatch) -> None:
        if self.n == 1:
            self.batches.append(batch)
            return
        part = self.of_user[pc.index_in(batch.column(0), value_set=self.users).to_numpy()]
        order = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[order], np.arange(self.n + 1))
        batch = batch.take(order)
        for p in np.flatnonzero(np.diff(bounds)):
            self.writers[p].write_batch(batch.slice(bounds[p], bounds[p + 1] - bounds[p]))

    def ranges(self):
        """(table, its users, their counts) per range, in the users' order."""
        for w in self.writers:
            w.close()
        bounds = np.searchsorted(self.of_user, np.arange(self.n + 1))
        for p in range(self.n):
            lo, hi = bounds[p], bounds[p + 1]
            if self.n == 1:
                table = pa.Table.from_batches(self.batches, schema=self.schema)
                self.batches = []
            else:
                with pa.ipc.open_stream(str(self.files[p])) as reader:
                    table = reader.read_all()
            yield table.combine_chunks(), self.users.slice(lo, hi - lo), self.counts[lo:hi]


def last_events(table: pa.Table, users: pa.Array, counts: np.ndarray, last: int | None
                ) -> pa.Table:
    """One range's events (columns user, item, time) sorted by user, time, item and cut to each
    user's `last` events; `users` sorted, `counts` their events as pass 1 counted them."""
    user, item, time = table.column_names
    found = pc.index_in(table[user], value_set=users)
    rank = found.to_numpy() if found.null_count == 0 else None
    if rank is None or not np.array_equal(np.bincount(rank, minlength=len(users)), counts):
        raise DataError(f"pass 2 read {table.num_rows:,} events of {len(users):,} users whose "
                        f"events pass 1 counted otherwise: did the input change while it was read?")
    # numpy sorts one int64 key of rank and time ~5x faster than Arrow sorts the two columns;
    # the rows that tie on both are then sorted by item (text: slow to sort all rows by it).
    times = table[time].to_numpy()
    start = times.min() if len(times) else 0
    if len(times) and times.max() - start < 2**32 and len(users) < 2**31:
        order = np.argsort((rank.astype(np.int64) << 32) | (times - start))
    else:
        order = np.lexsort((times, rank))
    rank, times = rank[order], times[order]
    same = (rank[1:] == rank[:-1]) & (times[1:] == times[:-1])
    if same.any():
        tied = np.flatnonzero(np.append(same, False) | np.insert(same, 0, False))
        run = np.cumsum(np.insert(~same, 0, True))[tied]
        items = table[item].take(order[tied])
        by_item = pc.sort_indices(pa.table({"run": run, "item": items}),
                                  sort_keys=[("run", "ascending"), ("item", "ascending")])
        order[tied] = order[tied][by_item.to_numpy()]
    if last is not None and (counts > last).any():
        from_end = np.repeat(np.cumsum(counts), counts) - np.arange(table.num_rows)
        order = order[from_end <= last]
    return table.take(order)


class RowGroups:
    """A Parquet writer whose row groups hold exactly `rows` rows (the last: the rest), each
    written from one contiguous chunk, whatever the sizes of the tables it is given."""

    def __init__(self, path: Path, schema: pa.Schema, rows: int):
        self.writer = pq.ParquetWriter(str(path), schema, compression="zstd",
                                       compression_level=ZSTD_LEVEL)
        self.rows, self.pending = rows, []

    def write(self, table: pa.Table) -> None:
        self.pending.append(table)
        while sum(len(t) for t in self.pending) >= self.rows:
            self._flush(self.rows)

    def _flush(self, n: int) -> None:
        table = pa.concat_tables(self.pending)
        self.writer.write_table(table.slice(0, n).combine_chunks(), row_group_size=n)
        self.pending = [table.slice(n)]

    def close(self) -> None:
        if rest := sum(len(t) for t in self.pending):
            self._flush(rest)
        self.writer.close()
