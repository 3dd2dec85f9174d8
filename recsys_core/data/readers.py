"""Parsers for the raw formats, each returning the normalized interactions table.

The normalized table has columns user, item (raw ids, int64), timestamp (int64) and rating
(float64, null where the format has none), in the original file order; titles map raw item
ids to display strings.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys_core.data import scan
from recsys_core.data.fetch import DataError

COLUMNS = ["user", "item", "timestamp", "rating"]


def _read_table(path, sep: str, names: list[str], header: int | None = None,
                label: Path | None = None) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep=sep, names=names, header=header, engine="c",
                           dtype={n: "int64" for n in names if n != "rating"})
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"{label or path}: cannot parse as {sep!r}-separated {names}: {e}") from e


def read_ml100k(folder: Path) -> tuple[pd.DataFrame, dict[int, str]]:
    # u.data: user \t item \t rating \t timestamp
    df = _read_table(folder / "u.data", "\t", ["user", "item", "rating", "timestamp"])
    titles = {}
    with open(folder / "u.item", encoding="latin-1") as f:  # GroupLens wrote Latin-1
        for line in f:
            fields = line.rstrip("\n").split("|")
            if len(fields) >= 2 and fields[0]:
                titles[int(fields[0])] = fields[1]
    return _normalized(df), titles


def read_ml1m_style(folder: Path) -> tuple[pd.DataFrame, dict[int, str]]:
    """ml-1m and ml-10m: ratings.dat `user::item::rating::timestamp`, movies.dat Latin-1."""
    ratings = folder / "ratings.dat"
    # '::' is two characters, which pandas' fast parser cannot split on: make it a tab first.
    data = io.BytesIO(ratings.read_bytes().replace(b"::", b"\t"))
    df = _read_table(data, "\t", ["user", "item", "rating", "timestamp"], label=ratings)
    titles = {}
    with open(folder / "movies.dat", encoding="latin-1") as f:
        for line in f:
            fields = line.rstrip("\n").split("::")
            if len(fields) >= 2 and fields[0]:
                titles[int(fields[0])] = fields[1]
    return _normalized(df), titles


def read_ml20m(folder: Path) -> tuple[pd.DataFrame, dict[int, str]]:
    """ml-20m: ratings.csv with a header `userId,movieId,rating,timestamp`, movies.csv UTF-8."""
    df = _read_table(folder / "ratings.csv", ",", ["user", "item", "rating", "timestamp"], header=0)
    movies = pd.read_csv(folder / "movies.csv", encoding="utf-8")
    titles = dict(zip(movies["movieId"].astype(int), movies["title"].astype(str)))
    return _normalized(df), titles


def read_sequence_file(path: Path) -> tuple[pd.DataFrame, dict[int, str]]:
    """The SASRec/BERT4Rec papers' benchmark format: `user item` per line, each user's lines
    in chronological order, no timestamps. The line number stands in for the timestamp, so the
    stable sort of preprocessing keeps the file's order."""
    df = _read_table(path, " ", ["user", "item"])
    if len(df) == 0:
        raise DataError(f"{path}: no interactions")
    df["timestamp"] = np.arange(len(df), dtype=np.int64)
    df["rating"] = np.nan
    return _normalized(df), {}


def read_user_lines(path: Path) -> tuple[pd.DataFrame, dict[int, str]]:
    """The S3Rec benchmark format: one user per line, `user item item ...`, the items in
    chronological order, no timestamps. As in `read_sequence_file`, the position in the file
    stands in for the timestamp."""
    try:
        text = path.read_text()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    lines = [line.split() for line in text.splitlines() if line.strip()]
    per_line = np.array([len(line) for line in lines], dtype=np.int64)
    try:
        tokens = np.array([t for line in lines for t in line], dtype=np.int64)
    except ValueError as e:
        raise DataError(f"{path}: expected integer ids, `user item item ...` ({e})") from None
    if not len(per_line) or (per_line < 2).any():
        raise DataError(f"{path}: expected lines of `user item item ...`")
    starts = np.concatenate([[0], np.cumsum(per_line)[:-1]])
    users = np.repeat(tokens[starts], per_line - 1)
    items = np.delete(tokens, starts)
    df = pd.DataFrame({"user": users, "item": items,
                       "timestamp": np.arange(len(items), dtype=np.int64), "rating": np.nan})
    return _normalized(df), {}


def _normalized(df: pd.DataFrame) -> pd.DataFrame:
    df = df[COLUMNS].copy()
    df["rating"] = df["rating"].astype("float64")
    return df.reset_index(drop=True)


LISTENING_HEADERS = (("user", "song", "timestamp"), ("user_id", "track_id", "timestamp"))


def read_listening_events(path: Path) -> tuple[pd.DataFrame, dict[int, str]]:
    """Music4All's `listening_history.csv` and Music4All-Onion's `userid_trackid_timestamp.tsv`:
    tab-separated (the former's `.csv` too) with a header line, `user<TAB>song<TAB>timestamp`
    and `user_id<TAB>track_id<TAB>timestamp`; text ids (Music4All users `user_007XIjOr`, tracks
    `0009fFIM1eYThaPg`; Onion's users are numbers) and times `2019-02-20 10:37:17` (UTC; to the
    minute `2019-02-20 12:28` too). Each id becomes its rank among the file's distinct ids
    (1-based, in byte order); titles map item numbers back to track ids.

    Sources for the format (no file of either was at hand): Music4All's readme.txt (all its
    files tab-separated; listening_history.csv has user, song and timestamp), public readers of
    both (pandas `sep="\\t"` with the header row; Onion's times parsed as `%Y-%m-%d %H:%M:%S`),
    and the RecBole conversion notes for Music4All-Onion.
    """
    inp = scan.open_input(path, delimiter="\t",
                          text_columns=("user", "song", "user_id", "track_id"))
    header = tuple(inp.schema.names)
    if header not in LISTENING_HEADERS:
        raise DataError(f"{path}: header {' '.join(header)!r}; expected one of "
                        f"{' or '.join(repr(' '.join(h)) for h in LISTENING_HEADERS)}")
    user, item, stamp = header
    try:
        table = inp.dataset().to_table(columns={"user": scan.ids(inp, user, text=True),
                                                "item": scan.ids(inp, item, text=True),
                                                "timestamp": scan.seconds(inp, stamp)})
    except pa.ArrowException as e:
        raise DataError(f"{path}: {e}") from e
    if table.num_rows == 0:
        raise DataError(f"{path}: no listening events")
    users, _ = _ranks(table["user"])
    items, track_ids = _ranks(table["item"])
    df = pd.DataFrame({"user": users, "item": items,
                       "timestamp": table["timestamp"].to_numpy(), "rating": np.nan})
    return _normalized(df), dict(enumerate(track_ids, start=1))


def _ranks(ids: pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    distinct = pc.unique(ids)
    distinct = distinct.take(pc.sort_indices(distinct))
    ranks = pc.index_in(ids, value_set=distinct).to_numpy().astype(np.int64) + 1
    return ranks, distinct.to_pylist()
