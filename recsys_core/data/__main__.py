"""`python -m recsys_core.data stats NAME`: the columns of the study's dataset table: the
file's users, items and interactions, and those kept by the users-with-fewer-than-N rule.
`python -m recsys_core.data sample INPUT --out OUT.parquet`: a deterministic sample of a log."""
from __future__ import annotations

import argparse
import json
import os
import sys

from recsys_core.data.fetch import MIRROR_ENV, DataError
from recsys_core.data.names import DATASET_NAMES

SAMPLE = """\
A deterministic sample of an interaction log of any size, streamed in two passes.
Input: a Parquet, CSV or TSV file (text also .gz/.bz2/.zst/.lz4) or a directory of them
(hidden and _-prefixed files skipped). CSV/TSV files need a header line naming the columns;
the delimiter is a tab if the first file's header has one, else a comma (--delimiter).
Times: integer seconds, timestamps, dates or ISO 8601 text (UTC); written as int64 seconds.

Order of operations: time window [--start, --end) -> user fraction (salted hash of the user id;
one salt gives nested samples) -> --min-events (counted in the window) -> --last K (each user's
most recent K) -> rows sorted by user, time, item. The output (Parquet, zstd) holds the user,
item and time columns under their input names; the same input and options give the same
bytes. Beside it, OUT.parquet.json: the input's fingerprint, the options, rows and users in
and out, items out, seconds. Errors: one line, exit status 2, nothing written."""


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        print(f"error: {self.prog}: {message}", file=sys.stderr)
        sys.exit(2)


def parse_time(text: str) -> int:
    from recsys_core.data.scan import parse_time
    try:
        return parse_time(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_sample_parser(sub) -> None:
    p = sub.add_parser("sample", help="a deterministic sample of a large interaction log",
                       description=SAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="a Parquet, CSV or TSV file, or a directory of them")
    p.add_argument("--out", required=True, help="the Parquet file to write")
    p.add_argument("--user-col", default="user")
    p.add_argument("--item-col", default="item")
    p.add_argument("--time-col", default="timestamp")
    p.add_argument("--start", type=parse_time, help="first time kept: seconds or ISO 8601 (UTC)")
    p.add_argument("--end", type=parse_time, help="first time no longer kept")
    p.add_argument("--fraction", type=float, default=1.0, help="of the users, in (0, 1]")
    p.add_argument("--salt", default="", help="of the user hash (default: empty)")
    p.add_argument("--min-events", type=int, default=1, help="drop users with fewer events")
    p.add_argument("--last", type=int, default=None, help="keep each user's K most recent events")
    p.add_argument("--delimiter", default=None, help="of text files (default: from the header)")
    p.add_argument("--batch-rows", type=int, default=1 << 20, help="rows per scanned batch")
    p.add_argument("--partition-rows", type=int, default=4_000_000,
                   help="events sorted in memory at once; more are spilled to disk by user range")
    p.add_argument("--row-group-rows", type=int, default=1 << 20)


def run_sample(args) -> int:
    from recsys_core.data.sample import Options, manifest_path, sample
    fields = ("user_col", "item_col", "time_col", "start", "end", "fraction", "salt",
              "min_events", "last", "delimiter", "batch_rows", "partition_rows", "row_group_rows")
    try:
        m = sample(args.input, args.out, Options(**{f: getattr(args, f) for f in fields}))
    except (DataError, ValueError, OSError) as e:   # OSError: --out not writable, disk full
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {m['rows']['out']:,} events of {m['users']['out']:,} users and "
          f"{m['items_out']:,} items, from {m['rows']['in']:,} events in "
          f"{m['seconds']['total']:.1f} s; manifest {manifest_path(args.out)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m recsys_core.data")
    sub = parser.add_subparsers(dest="command", required=True)
    stats = sub.add_parser("stats", help="users, items, interactions, avg length, sparsity")
    stats.add_argument("name", help=f"one of: {', '.join(DATASET_NAMES)}")
    stats.add_argument("--data-mirror", default=None,
                       help=f"directory of GroupLens-named folders or zips (default: ${MIRROR_ENV})")
    stats.add_argument("--min-user-interactions", type=int, default=5)
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    add_sample_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "sample":
        return run_sample(args)
    if args.data_mirror:
        os.environ[MIRROR_ENV] = args.data_mirror
    from recsys_core.data.dataset import load_dataset
    try:
        data = load_dataset(args.name, min_user_interactions=args.min_user_interactions)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    s = data.stats()
    if args.json:
        print(json.dumps(s))
        return 0
    n = args.min_user_interactions
    print(f"dataset        {s['dataset']}")
    print(f"in the file    {s['file_users']:,} users, {s['file_items']:,} items, "
          f"{s['file_interactions']:,} interactions")
    print(f"users          {s['users']:,}   (with >= {n} interactions)")
    print(f"items          {s['items']:,}")
    print(f"interactions   {s['interactions']:,}")
    print(f"avg_seq_len    {s['avg_seq_len']:.2f}")
    print(f"sparsity       {s['sparsity']:.4f}")
    print(f"dropped        {s['dropped_users']:,} users with < {n} interactions "
          f"({s['dropped_interactions']:,} interactions); {s['cold_users']:,} of them with 2 or "
          "more: the cold-start users")
    return 0


if __name__ == "__main__":
    sys.exit(main())
