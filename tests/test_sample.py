"""`python -m recsys_core.data sample`: its result against pandas, determinism whatever the
batching, partitioning, file layout and format, nested fractions, the manifest, the errors."""
import gzip
import hashlib
import json
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from recsys_core.data import DataError, scan
from recsys_core.data.sample import Options, sample, user_fraction
from tests.conftest import REPO

COLS = {"user_col": "user", "item_col": "item", "time_col": "timestamp"}
T0 = 1_546_300_800                       # 2019-01-01 00:00:00 UTC


def log(n_users=400, seed=0) -> pd.DataFrame:
    """Users with 1 to ~120 events, Zipf-ish items as text, times with ties within a user."""
    rng = np.random.default_rng(seed)
    sizes = rng.geometric(1 / 25, n_users).clip(1, 120)
    users = np.repeat(rng.permutation(n_users) * 3 + 7, sizes)
    n = len(users)
    return pd.DataFrame({
        "user": users,
        "item": [f"track_{i:04d}" for i in rng.zipf(1.3, n) % 500],
        "timestamp": T0 + rng.integers(0, 40, n) * 86_400 // 4,   # quarter days: many ties
    }).sample(frac=1, random_state=seed).reset_index(drop=True)


def write(df: pd.DataFrame, path, fmt: str) -> None:
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
        return
    text = df.assign(timestamp=pd.to_datetime(df["timestamp"], unit="s").dt.strftime(
        "%Y-%m-%d %H:%M:%S")).to_csv(sep="," if fmt == "csv" else "\t", index=False)
    path.write_bytes(gzip.compress(text.encode()) if str(path).endswith(".gz") else text.encode())


def in_fraction(user, fraction, salt=""):
    """The documented hash (FNV-1a 64, splitmix64's finalizer), written out in plain Python."""
    h = 0xCBF29CE484222325
    for byte in salt.encode() + b"\0" + str(user).encode():
        h = (h ^ byte) * 0x100000001B3 % 2**64
    for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        h = (h ^ (h >> shift)) * factor % 2**64
    return ((h ^ (h >> 31)) >> 11) / 2**53 < fraction


def expected(df, start=None, end=None, fraction=1.0, salt="", min_events=1, last=None):
    d = df[(df.timestamp >= (start or -2**62)) & (df.timestamp < (end or 2**62))]
    d = d[d.user.map(lambda u: in_fraction(u, fraction, salt))]
    d = d[d.groupby("user").user.transform("size") >= min_events]
    d = d.sort_values(["user", "timestamp", "item"])
    if last:
        d = d.groupby("user").tail(last)
    return d.reset_index(drop=True)


def run(src, out, **options) -> dict:
    return sample(src, out, Options(**{**COLS, **options}))


def read(path) -> pd.DataFrame:
    return pq.read_table(path).to_pandas()


@pytest.fixture
def data(tmp_path):
    df = log()
    write(df, tmp_path / "log.parquet", "parquet")
    return df, tmp_path / "log.parquet"


@pytest.mark.parametrize("options", [
    {},
    {"start": T0 + 86_400, "end": T0 + 8 * 86_400},
    {"fraction": 0.3, "salt": "a"},
    {"min_events": 30},
    {"last": 7},
    {"start": T0 + 2 * 86_400, "fraction": 0.5, "min_events": 10, "last": 12},
])
def test_matches_pandas(data, tmp_path, options):
    df, src = data
    m = run(src, tmp_path / "out.parquet", **options)
    got, want = read(tmp_path / "out.parquet"), expected(df, **options)
    assert list(got.columns) == ["user", "item", "timestamp"] and len(want) > 0
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    assert m["rows"]["in"] == len(df) and m["rows"]["out"] == len(want)
    assert m["users"]["out"] == want.user.nunique() and m["items_out"] == want.item.nunique()


def test_same_bytes_whatever_the_batches_ranges_files_and_format(data, tmp_path):
    df, src = data
    opts = {"fraction": 0.6, "min_events": 5, "last": 20, "row_group_rows": 500}
    run(src, tmp_path / "a.parquet", **opts)
    run(src, tmp_path / "b.parquet", **opts)
    # several files, rows shuffled differently, in CSV, TSV (one gzipped) and Parquet; tiny
    # batches and ranges of ~300 events, spilled to disk
    for fmt, suffixes in [("parquet", [".parquet"] * 3), ("csv", [".csv"] * 3),
                          ("tsv", [".tsv", ".tsv.gz", ".tsv"])]:
        folder = tmp_path / f"parts-{fmt}"
        folder.mkdir()
        shuffled = df.sample(frac=1, random_state=1)
        for k in range(3):
            write(shuffled.iloc[k::3], folder / f"part-{k}{suffixes[k]}", fmt)
        m = run(folder, tmp_path / f"{fmt}.parquet", batch_rows=37, partition_rows=300, **opts)
        assert m["execution"]["ranges"] > 3 and len(m["input"]["files"]) == 3
    outputs = {p: (tmp_path / f"{p}.parquet").read_bytes()
               for p in ("a", "b", "parquet", "csv", "tsv")}
    assert len(set(outputs.values())) == 1
    meta = pq.ParquetFile(tmp_path / "a.parquet").metadata
    assert meta.num_row_groups > 1 and meta.row_group(0).num_rows == 500
    assert b"ARROW:schema" in meta.metadata and set(meta.metadata) == {b"ARROW:schema"}


def test_batches_are_read_a_few_pieces_ahead_of_a_slow_consumer(tmp_path, monkeypatch):
    monkeypatch.setattr(scan, "WORKERS", 2)
    df = log(n_users=4000, seed=3)
    write(df, tmp_path / "one.parquet", "parquet")
    table = pq.read_table(tmp_path / "one.parquet")
    pq.write_table(table, tmp_path / "one.parquet", row_group_size=len(df) // 40)
    piece = table.slice(0, len(df) // 40).nbytes
    del table
    inp = scan.open_input(tmp_path / "one.parquet", ("user", "item", "timestamp"))
    base, peak, rows = pa.total_allocated_bytes(), 0, 0
    for batch in inp.batches(["user", "item", "timestamp"],
                             {c: ds.field(c) for c in ("user", "item", "timestamp")}, None, 10**6):
        peak, rows = max(peak, pa.total_allocated_bytes() - base), rows + batch.num_rows
        time.sleep(0.005)
    assert rows == len(df) and peak < 10 * piece       # 2 threads, 2 each ahead; not all 40


def test_nested_fractions_and_salts(tmp_path):
    src = tmp_path / "log.parquet"
    write(log(n_users=3000, seed=2), src, "parquet")
    users = {}
    for name, fraction, salt in [("1", 0.01, "x"), ("5", 0.05, "x"), ("5y", 0.05, "y")]:
        run(src, tmp_path / f"{name}.parquet", fraction=fraction, salt=salt)
        users[name] = set(read(tmp_path / f"{name}.parquet").user)
    assert 10 < len(users["1"]) < 60 and 100 < len(users["5"]) < 200
    assert users["1"] < users["5"]
    assert users["5y"] != users["5"] and len(users["5y"] & users["5"]) < len(users["5"]) / 2


def test_user_hash_is_the_documented_one_for_text_and_numbers():
    text = pa.array([f"user_{k:x}" for k in range(3000)] + ["", "é"]).slice(5)
    for users in (text, pa.array(np.arange(-50, 3000) * 7919)):
        got = user_fraction(users, 0.3, "salt")
        assert got.tolist() == [in_fraction(u, 0.3, "salt") for u in users.to_pylist()]
        assert 0.25 < got.mean() < 0.35
    assert (user_fraction(pa.array([12, 345]), 0.5, "") ==
            user_fraction(pa.array(["12", "345"]), 0.5, "")).all()


def test_manifest(data, tmp_path):
    _, src = data
    out = tmp_path / "out.parquet"
    m = run(src, out, fraction=0.5, salt="s", min_events=3, last=9, start=T0 + 86_400)
    assert json.loads((tmp_path / "out.parquet.json").read_text()) == m
    assert m["parameters"] == {**COLS, "start": T0 + 86_400, "end": None, "fraction": 0.5,
                               "salt": "s", "min_events": 3, "last": 9, "delimiter": None}
    (f,) = m["input"]["files"]
    assert f["name"] == "log.parquet" and f["bytes"] == src.stat().st_size
    assert f["head_tail_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert m["input"]["fingerprint"].startswith("sha256:") and "first and last MiB" in \
        m["input"]["fingerprint_kind"]
    assert m["output"] == {"file": "out.parquet", "bytes": out.stat().st_size,
                           "sha256": hashlib.sha256(out.read_bytes()).hexdigest()}
    r, u = m["rows"], m["users"]
    assert r["in"] >= r["in_window"] >= r["of_chosen_users"] >= r["out"] > 0
    assert u["in"] >= u["in_window"] >= u["in_fraction"] >= u["out"] > 0
    assert set(m["seconds"]) == {"pass1", "pass2", "sort_write", "total"}
    assert len(m["order"]) == 5 and m["order"][0].startswith("time window")


def cli(*args):
    return subprocess.run([sys.executable, "-m", "recsys_core.data", "sample", *args],
                          capture_output=True, text=True, cwd=REPO)


def test_cli_writes_and_reports(data, tmp_path):
    _, src = data
    ok = cli(str(src), "--out", str(tmp_path / "o.parquet"), "--fraction", "0.5",
             "--start", "2019-01-03 06:00:00", "--last", "5")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"wrote {tmp_path / 'o.parquet'}: ")
    assert read(tmp_path / "o.parquet").timestamp.min() >= T0 + 2 * 86_400 + 6 * 3600
    help_text = cli("--help").stdout
    assert "header line" in help_text and "--min-events" in help_text


@pytest.mark.parametrize("args, message", [
    (["--user-col", "listener"], "log.parquet: no column 'listener' (its columns: user, item, "),
    (["--fraction", "0"], "--fraction 0.0: must be in (0, 1]"),
    (["--last", "0"], "--last 0: must be at least 1"),
    (["--start", "yesterday"], "'yesterday' is not a time"),
    (["--start", "2019-02-01", "--end", "2019-01-01"], "is not before --end"),
    (["--item-col", "user"], "three different columns"),
    (["--min-events", "many"], "argument --min-events: invalid int value: 'many'"),
])
def test_bad_options_and_columns_one_line_exit_2_nothing_written(data, tmp_path, args, message):
    _, src = data
    res = cli(str(src), "--out", str(tmp_path / "o.parquet"), *args)
    assert res.returncode == 2 and res.stdout == ""
    assert len(res.stderr.splitlines()) == 1 and message in res.stderr, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.parquet"]


def test_bad_input_files(tmp_path):
    out = tmp_path / "out" / "o.parquet"
    out.parent.mkdir()
    cases = {
        "missing.parquet": None,
        "broken.parquet": b"PAR1 not really",
        "noheader.csv": b"",
        "notes.json": b"{}",
        "badtime.csv": b"user,item,timestamp\n1,a,2019-01-01 00:00:00\n2,b,last tuesday\n",
        "nouser.csv": b"user,item,timestamp\n1,a,5\n,b,6\n",
        "noitem.csv": b"user,item,timestamp\n1,a,5\n2,,6\n",
        "notime.csv": b"user,item,timestamp\n1,a,5\n2,b,\n",
        "headeronly.csv": b"user,item,timestamp\n",     # was "has type null"
    }
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError) as e:
            run(tmp_path / name, out)
        assert name in str(e.value)
        assert list(out.parent.iterdir()) == []
        if name == "headeronly.csv":
            assert "holds no value (no rows after the header" in str(e.value), e.value
    (tmp_path / "e").mkdir()
    write(log(5), tmp_path / "e" / "a.csv", "csv")
    (tmp_path / "e" / "b.csv").write_bytes(cases["badtime.csv"])
    with pytest.raises(DataError, match=r"e/b\.csv: .*'last tuesday'"):
        run(tmp_path / "e", out)
    with pytest.raises(DataError, match="no column 'item'"):
        (tmp_path / "d").mkdir()
        write(log(5), tmp_path / "d" / "a.csv", "csv")
        (tmp_path / "d" / "b.csv").write_text("user,track,timestamp\n1,a,5\n")
        run(tmp_path / "d", out)
    with pytest.raises(DataError, match="inside the input directory"):
        run(tmp_path / "d", tmp_path / "d" / "o.parquet")
    with pytest.raises(DataError, match="o.parquet: a directory"):
        (out.parent / "o.parquet").mkdir()
        run(tmp_path / "d" / "a.csv", out)


def test_an_out_that_is_the_input_file_is_refused_and_the_input_kept(data, tmp_path):
    """`--out log.parquet` on log.parquet (or a link to it) replaced the input with its own
    sample."""
    _, src = data
    before = src.read_bytes()
    (tmp_path / "link.parquet").symlink_to(src)
    for out in (src, tmp_path / "link.parquet"):
        res = cli(str(src), "--out", str(out), "--fraction", "0.5")
        assert res.returncode == 2 and res.stdout == "", res.stderr
        assert f"--out {out}: the input file itself" in res.stderr
    assert src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.parquet", "log.parquet"]


def music4all_lines(n_users=12, seed=0, header="user\tsong\ttimestamp", minutes=False):
    rng = np.random.default_rng(seed)
    alphabet = np.array(list("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    users = ["user_" + "".join(rng.choice(alphabet, 8)) for _ in range(n_users)]
    if header.startswith("user_id"):
        users = [str(rng.integers(1, 10**8)) for _ in range(n_users)]
    tracks = ["".join(rng.choice(alphabet, 16)) for _ in range(40)]
    rows = []
    for u in users:
        for _ in range(rng.integers(5, 40)):
            t = pd.Timestamp("2019-02-20 10:37:17") + pd.Timedelta(seconds=int(rng.integers(10**7)))
            stamp = t.strftime("%Y-%m-%d %H:%M" if minutes else "%Y-%m-%d %H:%M:%S")
            rows.append(f"{u}\t{tracks[rng.integers(0, 40)]}\t{stamp}\n")
    return header + "\n" + "".join(rows)


@pytest.mark.parametrize("name, file, header, minutes", [
    ("music4all", "listening_history.csv", "user\tsong\ttimestamp", False),
    ("music4all", "listening_history.csv", "user\tsong\ttimestamp", True),
    ("music4all-onion", "userid_trackid_timestamp.tsv", "user_id\ttrack_id\ttimestamp", False),
])
def test_music4all_through_load_dataset_and_sample(tmp_path, name, file, header, minutes):
    from recsys_core.data import load_dataset
    folder = tmp_path / name
    folder.mkdir()
    text = music4all_lines(header=header, minutes=minutes)
    (folder / file).write_text(text)
    assert len(text.splitlines()) > 200
    data = load_dataset(name, mirror=str(tmp_path), min_user_interactions=3)
    ref = pd.read_csv(folder / file, sep="\t", dtype=str)
    ref.columns = ["user", "item", "timestamp"]
    ref["t"] = (pd.to_datetime(ref.timestamp) - pd.Timestamp(0)) // pd.Timedelta(seconds=1)
    assert (data.n_users, data.n_interactions) == (ref.user.nunique(), len(ref))
    first = sorted(ref.user.unique())[0]
    seq = ref[ref.user == first].sort_values("t", kind="stable").item.tolist()
    assert [data.titles[i] for i in data.items[data.offsets[0]:data.offsets[1]]] == seq
    m = run(folder / file, tmp_path / "s.parquet", user_col=header.split("\t")[0],
            item_col=header.split("\t")[1], min_events=20, last=10)
    got = read(tmp_path / "s.parquet")
    assert m["input"]["delimiter"] == "\t" and m["rows"]["in"] == len(ref)
    assert got.groupby(got.columns[0]).size().max() == 10
    assert set(got.timestamp) <= set(ref.t)


def test_music4all_missing_file_says_how_to_get_it(tmp_path):
    from recsys_core.data import load_dataset
    with pytest.raises(DataError, match=r"music4all/\{listening_history.csv\}.*on request"):
        load_dataset("music4all", mirror=str(tmp_path))
    (tmp_path / "music4all-onion").mkdir()
    (tmp_path / "music4all-onion" / "userid_trackid_timestamp.tsv").write_text("user\titem\tt\n")
    with pytest.raises(DataError, match="header 'user item t'; expected one of"):
        load_dataset("music4all-onion", mirror=str(tmp_path))


def test_benchmark_smoke(tmp_path):
    res = subprocess.run([sys.executable, "-m", "benchmarks.sampling", "--rows", "20000", "40000",
                          "--chunk-rows", "10000", "--fractions", "0.05", "--repeats", "1",
                          "--tsv-rows", "20000",
                          "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    table = pd.read_csv(tmp_path / "out" / "sampling.csv")
    assert list(table.input_rows) == [20_000, 40_000, 20_000, 40_000]
    assert list(table.format) == ["Parquet", "Parquet", "TSV", "Parquet"]
    assert list(table.fraction) == [0.05, 0.05, 0.05, 1.0] and table.same_bytes_each_run.all()
    md = (tmp_path / "out" / "sampling.md").read_text()
    assert " cores, " in md and "peak RSS MiB" in md and "from TSV and from Parquet of the " \
        "same rows: True." in md
