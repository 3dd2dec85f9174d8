"""Datasets by name: raw files → normalized Parquet table (cached) → per-user sequences.

`load_dataset("ml-100k")` returns a `SequenceData`: every user's items in chronological order,
ids remapped to 1..n_items (0 is padding), stored flat (`items`) with `offsets` marking where
each user's sequence starts, which is what the split and the batching index into.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys_core.data import names, readers
from recsys_core.data.names import DATASET_NAMES, SEQUENCE_FILES, USER_LINE_FILES
from recsys_core.data.fetch import DataError, cache_root, raw_dir
from recsys_core.data.synthetic import SyntheticSpec, generate

Reader = Callable[[Path], tuple[pd.DataFrame, dict[int, str]]]

GROUPLENS_READERS: dict[str, Reader] = {
    "ml-100k": readers.read_ml100k,
    "ml-1m": readers.read_ml1m_style,
    "ml-10m": readers.read_ml1m_style,
    "ml-20m": readers.read_ml20m,
}
SYNTHETIC_SHAPES: dict[str, SyntheticSpec] = {
    "synthetic": SyntheticSpec(),
    # The shapes of the GPU benchmarks (issue "GPU"): ML-1M and ML-20M sized, structure as above.
    "synthetic-ml-1m": SyntheticSpec(n_users=6040, n_items=3706, n_interactions=1_000_209,
                                     n_clusters=40),
    "synthetic-ml-20m": SyntheticSpec(n_users=138_493, n_items=26_744,
                                      n_interactions=20_000_263, n_clusters=200),
}
assert set(GROUPLENS_READERS) == set(names.GROUPLENS) and set(SYNTHETIC_SHAPES) == set(names.SYNTHETIC)


@dataclass
class SequenceData:
    name: str
    n_users: int
    n_items: int
    offsets: np.ndarray            # int64 [n_users + 1]; user u's items are items[offsets[u]:offsets[u+1]]
    items: np.ndarray              # int64 [n_interactions], ids in 1..n_items
    titles: list[str]              # index = item id; titles[0] = "<pad>"
    item_raw_ids: np.ndarray       # int64 [n_items + 1]; raw id of each item id (0 for padding)
    user_raw_ids: np.ndarray       # int64 [n_users]
    dropped_users: int = 0         # users below min_user_interactions
    dropped_interactions: int = 0
    file_items: int = 0            # distinct items in the file, before the users were dropped
    # Cold-start users: those dropped with 2 .. min_user_interactions-1 interactions, their
    # items in time order mapped to the ids above (0: an item only such users have).
    cold_offsets: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    cold_items: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    options: dict = field(default_factory=dict)

    @property
    def n_interactions(self) -> int:
        return int(len(self.items))

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def stats(self) -> dict:
        return {
            "dataset": self.name,
            "file_users": self.n_users + self.dropped_users,
            "file_items": self.file_items,
            "file_interactions": self.n_interactions + self.dropped_interactions,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": self.n_interactions,
            "avg_seq_len": self.n_interactions / max(self.n_users, 1),
            "sparsity": 1.0 - self.n_interactions / max(self.n_users * self.n_items, 1),
            "dropped_users": self.dropped_users,
            "dropped_interactions": self.dropped_interactions,
            "cold_users": len(self.cold_offsets) - 1,
        }


def load_dataset(name: str, *, min_user_interactions: int = 5, mirror: str | None = None,
                 synthetic: dict | None = None) -> SequenceData:
    """Load a dataset by name (see DATASET_NAMES), preprocessed and ready to split."""
    if min_user_interactions < 3:
        raise DataError(f"min_user_interactions={min_user_interactions}: leave-one-out needs at "
                        "least 3 interactions per user (train, validation, test)")
    table, titles = interactions_table(name, mirror=mirror, synthetic=synthetic)
    data = preprocess(table, titles, name=name, min_user_interactions=min_user_interactions)
    data.options = {"min_user_interactions": min_user_interactions, **(synthetic or {})}
    return data


def interactions_table(name: str, *, mirror: str | None = None,
                       synthetic: dict | None = None) -> tuple[pd.DataFrame, dict[int, str]]:
    """The normalized (user, item, timestamp, rating) table, read from the Parquet cache or
    built from the raw files once and written there (zstd)."""
    if name not in DATASET_NAMES:
        raise DataError(f"unknown dataset {name!r}; valid: {', '.join(DATASET_NAMES)}")
    if name in SYNTHETIC_SHAPES:
        spec = SyntheticSpec(**{**asdict(SYNTHETIC_SHAPES[name]), **(synthetic or {})})
        key = hashlib.sha256(json.dumps(asdict(spec), sort_keys=True).encode()).hexdigest()[:12]
        folder = cache_root() / "processed" / f"{name}-{key}"
        build = lambda: generate(spec)  # noqa: E731
    else:
        if synthetic:
            raise DataError(f"dataset {name!r} takes no synthetic options (got {synthetic})")
        folder = cache_root() / "processed" / name
        if name in GROUPLENS_READERS:
            build = lambda: GROUPLENS_READERS[name](raw_dir(name, mirror))  # noqa: E731
        elif name in USER_LINE_FILES:
            build = lambda: readers.read_user_lines(  # noqa: E731
                raw_dir(name, mirror) / USER_LINE_FILES[name])
        elif name in names.LISTENING_LOGS:
            build = lambda: readers.read_listening_events(  # noqa: E731
                raw_dir(name, mirror) / names.LISTENING_LOGS[name])
        else:
            build = lambda: readers.read_sequence_file(  # noqa: E731
                raw_dir(name, mirror) / SEQUENCE_FILES[name])
    table_path, titles_path = folder / "interactions.parquet", folder / "titles.parquet"
    if table_path.exists() and titles_path.exists():
        table = pq.read_table(table_path).to_pandas()
        t = pq.read_table(titles_path).to_pandas()
        return table, dict(zip(t["item"].tolist(), t["title"].tolist()))
    from recsys_core.data.fetch import progress
    with progress(f"preprocessing {name} (once; cached in {folder})", unit="it"):
        table, titles = build()
    folder.mkdir(parents=True, exist_ok=True)
    _write_parquet(pa.Table.from_pandas(table, preserve_index=False), table_path)
    _write_parquet(pa.table({"item": pa.array(list(titles), pa.int64()),
                             "title": pa.array(list(titles.values()), pa.string())}), titles_path)
    return table, titles


def _write_parquet(table: pa.Table, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def preprocess(table: pd.DataFrame, titles: dict[int, str], *, name: str,
               min_user_interactions: int) -> SequenceData:
    users = table["user"].to_numpy(np.int64)
    items = table["item"].to_numpy(np.int64)
    stamps = table["timestamp"].to_numpy(np.int64)
    # Sort by user, then time; equal timestamps keep their file order (the last key, row
    # number, makes the order explicit rather than relying on a sort's stability).
    order = np.lexsort((np.arange(len(users)), stamps, users))
    users, items = users[order], items[order]
    user_raw, user_idx, counts = np.unique(users, return_inverse=True, return_counts=True)
    keep_user = counts >= min_user_interactions
    if not keep_user.any():     # nothing to split: say so here, not as a model's shape error
        most = f"its most active user has {counts.max()}" if len(counts) else "it has none"
        raise DataError(f"{name}: no user has min_user_interactions={min_user_interactions} "
                        f"interactions ({most}); lower min_user_interactions")
    keep = keep_user[user_idx]
    file_items = len(np.unique(items))
    dropped_users = int((~keep_user).sum())
    cold = ((counts >= 2) & ~keep_user)[user_idx]
    cold_users, cold_items = users[cold], items[cold]
    users, items = users[keep], items[keep]
    item_raw, item_ids = np.unique(items, return_inverse=True)
    user_raw, lengths = np.unique(users, return_counts=True)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    item_titles = ["<pad>"] + [titles.get(int(r), f"item {int(r)}") for r in item_raw]
    return SequenceData(
        name=name, n_users=len(user_raw), n_items=len(item_raw), offsets=offsets,
        items=(item_ids + 1).astype(np.int64), titles=item_titles,
        item_raw_ids=np.concatenate([[0], item_raw]).astype(np.int64),
        user_raw_ids=user_raw.astype(np.int64), dropped_users=dropped_users,
        dropped_interactions=int((~keep).sum()), file_items=file_items,
        cold_offsets=np.concatenate([[0], np.cumsum(np.unique(cold_users, return_counts=True)[1])]
                                    ).astype(np.int64),
        cold_items=_item_ids(cold_items, item_raw))


def _item_ids(raw: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Raw item ids → the ids 1..n of `known` (sorted raw ids); 0 where not known."""
    at = np.clip(np.searchsorted(known, raw), 0, max(len(known) - 1, 0))
    found = known[at] == raw if len(known) else np.zeros(len(raw), bool)
    return np.where(found, at + 1, 0).astype(np.int64)
