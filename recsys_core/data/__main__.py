"""`python -m recsys_core.data stats NAME`: the columns of the study's dataset table: the
file's users, items and interactions, and those kept by the users-with-fewer-than-N rule."""
from __future__ import annotations

import argparse
import json
import os
import sys

from recsys_core.data import DATASET_NAMES, DataError, load_dataset
from recsys_core.data.fetch import MIRROR_ENV


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recsys_core.data")
    sub = parser.add_subparsers(dest="command", required=True)
    stats = sub.add_parser("stats", help="users, items, interactions, avg length, sparsity")
    stats.add_argument("name", help=f"one of: {', '.join(DATASET_NAMES)}")
    stats.add_argument("--data-mirror", default=None,
                       help=f"directory of GroupLens-named folders or zips (default: ${MIRROR_ENV})")
    stats.add_argument("--min-user-interactions", type=int, default=5)
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.data_mirror:
        os.environ[MIRROR_ENV] = args.data_mirror
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
