"""Interaction logs of any size: one Parquet, CSV or TSV file, or a directory of them, checked
up front (every file readable, every needed column named in it), then read in batches with
bounded memory (`Input.batches`) or whole as a pyarrow dataset. What `sample` and the
listening-event readers read through.

CSV and TSV files need a header line naming their columns; the delimiter is a tab where the
first file's header has one, else a comma (Music4All names its tab-separated files `.csv`).
Compressed text files (.gz, .bz2, .zst, .lz4) are decompressed as they are read. Column types
of text files are inferred from the first 4 MiB of the first file.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from recsys_core.data.fetch import DataError

PARQUET = (".parquet", ".pq", ".parq")
TEXT = (".csv", ".tsv", ".txt")
COMPRESSED = (".gz", ".bz2", ".zst", ".lz4")
HEAD_TAIL = 1 << 20        # bytes of each end of a file that its fingerprint hashes
WORKERS = os.cpu_count() or 1
TIME_FORMATS = "integer seconds, a timestamp, a date or ISO 8601 text like 2019-02-20 10:37:17"


def file_kind(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in COMPRESSED:
        name = name.removesuffix(suffix)
    if name.endswith(PARQUET):
        return "parquet"
    return "csv" if name.endswith(TEXT) else None


@dataclass
class Input:
    """The files of one input, their format and the schema the scan gives them."""

    path: Path
    files: list[Path]
    format: str                     # "parquet" or "csv"
    delimiter: str | None           # text files only
    text_columns: tuple[str, ...]   # text files: columns read as strings whatever they hold

    def dataset(self, dictionary: tuple[str, ...] = ()) -> ds.Dataset:
        """The files as one dataset; Parquet string columns named in `dictionary` are read as
        dictionary arrays (each row group's distinct values once: cheap to read and filter)."""
        if self.format == "parquet":
            fmt = ds.ParquetFileFormat(
                read_options=ds.ParquetReadOptions(dictionary_columns=list(dictionary)))
        else:
            fmt = ds.CsvFileFormat(
                parse_options=pcsv.ParseOptions(delimiter=self.delimiter),
                read_options=pcsv.ReadOptions(block_size=1 << 22),
                convert_options=pcsv.ConvertOptions(
                    column_types={c: pa.string() for c in self.text_columns},
                    strings_can_be_null=True))
        try:
            return ds.dataset([str(f) for f in self.files], format=fmt)
        except (OSError, pa.ArrowException) as e:
            raise DataError(f"{self.path}: cannot read as {self.format} ({e})") from e

    @cached_property
    def schema(self) -> pa.Schema:
        return self.dataset().schema

    def column_type(self, name: str) -> pa.DataType:
        kind = self.schema.field(name).type
        return kind.value_type if pa.types.is_dictionary(kind) else kind

    def batches(self, read: list[str], columns: dict[str, ds.Expression],
                keep: ds.Expression | None, batch_rows: int,
                dictionary: tuple[str, ...] = ()) -> Iterator[pa.RecordBatch]:
        """The rows that pass `keep`, as `columns` (of the columns `read`), in batches of at
        most `batch_rows`. Pieces (Parquet row groups, 4 MiB blocks of text) are read and
        filtered by one thread per core, at most two per thread ahead of the consumer: memory
        follows a piece, not a file (pyarrow's scanners read a whole file ahead of a slow
        consumer)."""
        if self.format == "parquet":
            dataset = self.dataset(dictionary)
            pieces: Iterable = (g for f in dataset.get_fragments() for g in f.split_by_row_group())

            def work(piece) -> list[pa.RecordBatch]:
                try:
                    return list(ds.Scanner.from_fragment(
                        piece, schema=dataset.schema, columns=columns, filter=keep,
                        batch_size=batch_rows, use_threads=False).to_batches())
                except (OSError, pa.ArrowException) as e:
                    raise DataError(f"{piece.path}: {e}") from e
        else:
            pieces = ((f, block) for f in self.files for block in self._blocks(f, read))

            def work(piece) -> list[pa.RecordBatch]:
                path, block = piece
                try:
                    table = ds.Scanner.from_batches([block], schema=block.schema,
                                                    columns=columns, filter=keep).to_table()
                except pa.ArrowException as e:
                    raise DataError(f"{path}: {e}") from e
                return table.to_batches(max_chunksize=batch_rows)
        for done in _ahead(work, pieces):
            yield from done

    def _blocks(self, path: Path, read: list[str]) -> Iterator[pa.RecordBatch]:
        try:
            yield from pcsv.open_csv(
                str(path), read_options=pcsv.ReadOptions(block_size=1 << 22),
                parse_options=pcsv.ParseOptions(delimiter=self.delimiter),
                convert_options=pcsv.ConvertOptions(
                    include_columns=read, strings_can_be_null=True,
                    column_types={c: self.schema.field(c).type for c in read}))
        except (OSError, pa.ArrowException) as e:
            raise DataError(f"{path}: {e}") from e


def _ahead(work: Callable, pieces: Iterable) -> Iterator:
    """work(piece) for each piece, in order, on WORKERS threads, at most 2 * WORKERS ahead."""
    workers = WORKERS
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        for piece in pieces:
            pending.append(pool.submit(work, piece))
            if len(pending) > 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def open_input(path: str | Path, columns: tuple[str, ...] = (), delimiter: str | None = None,
               text_columns: tuple[str, ...] = ()) -> Input:
    """The input at `path`, every file checked to be readable and to have `columns`."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not any(
            part.startswith((".", "_")) for part in p.relative_to(path).parts))
        if not files:
            raise DataError(f"{path}: no Parquet, CSV or TSV files in this directory")
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"{path}: no such file or directory")
    kinds = {f: file_kind(f) for f in files}
    unknown = [f for f, k in kinds.items() if k is None]
    if unknown:
        raise DataError(f"{unknown[0]}: not a Parquet, CSV or TSV file (by its name: "
                        f"{', '.join(PARQUET + TEXT)}, text optionally {', '.join(COMPRESSED)})")
    if len(set(kinds.values())) > 1:
        raise DataError(f"{path}: holds both Parquet and CSV/TSV files; give one format")
    fmt = kinds[files[0]]
    for f in files:
        if fmt == "parquet":
            names = _parquet_columns(f)
        else:
            header = _header_line(f)
            delimiter = delimiter or ("\t" if "\t" in header else ",")
            names = [n.strip().strip('"') for n in header.split(delimiter)]
        missing = [c for c in columns if c not in names]
        if missing:
            raise DataError(f"{f}: no column {missing[0]!r} (its columns: {', '.join(names)})")
    return Input(path, files, fmt, delimiter if fmt == "csv" else None, tuple(text_columns))


def _parquet_columns(path: Path) -> list[str]:
    try:
        return pq.read_schema(path).names
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: not a readable Parquet file ({e})") from e


def _header_line(path: Path) -> str:
    try:
        with pa.input_stream(str(path), compression="detect") as f:
            head = f.read(1 << 16)
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: cannot read ({e})") from e
    try:
        line = head.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: the header line is not UTF-8 text ({e})") from e
    if not line.strip():
        raise DataError(f"{path}: empty, or no header line naming the columns")
    return line


def _typed(inp: Input, name: str) -> pa.DataType:
    """Column `name`'s type; a column without a single value (a header and no rows) is no
    input to sample, which its type, null, would not say."""
    kind = inp.column_type(name)
    if pa.types.is_null(kind):
        raise DataError(f"{inp.path}: column {name!r} holds no value (no rows after the "
                        "header, or every one empty): no events to read")
    return kind


def id_type(inp: Input, name: str, text: bool = False) -> pa.DataType:
    """The type column `name` is read as: its integer type, else (or with `text`) string."""
    kind = _typed(inp, name)
    if not (pa.types.is_integer(kind) or pa.types.is_string(kind)
            or pa.types.is_large_string(kind)):
        raise DataError(f"{inp.path}: column {name!r} has type {kind}; ids are integers or text")
    return kind if pa.types.is_integer(kind) and not text else pa.string()


def ids(inp: Input, name: str, text: bool = False) -> ds.Expression:
    """Column `name` as ids of `id_type` (dictionaries decoded, large strings made plain)."""
    return ds.field(name).cast(id_type(inp, name, text))


def seconds(inp: Input, name: str) -> ds.Expression:
    """Column `name` as int64 seconds since 1970 (UTC; text without a zone is taken as UTC,
    finer units are truncated to whole seconds)."""
    kind = _typed(inp, name)
    col = ds.field(name)
    if pa.types.is_dictionary(inp.schema.field(name).type):
        col = col.cast(kind)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return col.cast(pa.int64(), safe=False)
    if pa.types.is_timestamp(kind):
        return col.cast(pa.timestamp("s", kind.tz), safe=False).cast(pa.int64())
    if pa.types.is_date(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return col.cast(pa.timestamp("s")).cast(pa.int64())
    raise DataError(f"{inp.path}: column {name!r} has type {kind}; a time is {TIME_FORMATS}")


def parse_time(text: str) -> int:
    """A --start/--end value: integer seconds since 1970, or an ISO 8601 date or time (UTC)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return pa.scalar(text).cast(pa.timestamp("s")).cast(pa.int64()).as_py()
    except pa.ArrowException:
        raise ValueError(f"{text!r} is not a time: integer seconds since 1970 or ISO 8601 "
                         "like 2019-02-20 or 2019-02-20 10:37:17 (UTC)") from None


def fingerprint(inp: Input) -> dict:
    """Each file's name, size and mtime, and SHA-256 of its first and last MiB: a cheap content
    hash, blind to a change inside a large file that keeps its size and both ends. The
    `fingerprint` digest covers names, sizes and those hashes, not mtimes: a copy of the same
    files has the same fingerprint."""
    files = []
    for f in inp.files:
        st = f.stat()
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            h.update(fh.read(HEAD_TAIL))
            if st.st_size > HEAD_TAIL:
                fh.seek(max(HEAD_TAIL, st.st_size - HEAD_TAIL))
                h.update(fh.read())
        name = f.name if f == inp.path else str(f.relative_to(inp.path))
        files.append({"name": name, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns,
                      "head_tail_sha256": h.hexdigest()})
    digest = hashlib.sha256(json.dumps(
        [[f["name"], f["bytes"], f["head_tail_sha256"]] for f in files]).encode()).hexdigest()
    return {"path": str(inp.path), "format": inp.format, "delimiter": inp.delimiter,
            "files": files, "fingerprint": f"sha256:{digest}",
            "fingerprint_kind": "names, sizes and SHA-256 of each file's first and last MiB"}
