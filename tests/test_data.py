"""Loaders on small files in every real format, the mirror/zip/cache paths, checksums."""
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from recsys_core.data import DataError, load_dataset
from recsys_core.data import fetch
from recsys_core.data.dataset import interactions_table

TITLE = "Amélie (Le Fabuleux Destin d'Amélie Poulain) (2001)"


def write_ml100k(folder, rows):
    folder.mkdir(parents=True)
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
    items = sorted({i for _, i, _, _ in rows})
    (folder / "u.item").write_bytes("".join(
        f"{i}|{TITLE if i == items[0] else f'Movie {i} (1990)'}|01-Jan-1990||http://x|0|1\n"
        for i in items).encode("latin-1"))


def rows_for(n_users=3, per_user=6):
    return [(u, 10 + (u * 7 + k) % 20, 4, 1000 + k) for u in range(1, n_users + 1)
            for k in range(per_user)]


def use_folder_as(monkeypatch, name, **overrides):
    """Checksums of the real GroupLens files can't match tiny test files: drop or replace them."""
    src = fetch.SOURCES[name]
    monkeypatch.setitem(fetch.SOURCES, name, fetch.Source(**{
        "folder": src.folder, "required": src.required, "url": src.url,
        "zip_checksum": None, "file_checksums": {}, **overrides}))


def test_ml100k_tab_format_latin1_titles(tmp_path, monkeypatch):
    write_ml100k(tmp_path / "ml-100k", rows_for())
    use_folder_as(monkeypatch, "ml-100k")
    data = load_dataset("ml-100k", mirror=str(tmp_path))
    assert (data.n_users, data.n_interactions) == (3, 18)
    assert TITLE in data.titles


def test_ml1m_double_colon_format_and_ml20m_csv(tmp_path, monkeypatch):
    d = tmp_path / "ml-1m"
    d.mkdir()
    (d / "ratings.dat").write_text("".join(f"{u}::{i}::5::{t}\n" for u, i, _, t in rows_for()))
    (d / "movies.dat").write_bytes(
        "".join(f"{i}::{TITLE if i == 17 else 'X'}::Drama\n" for i in range(10, 31)).encode("latin-1"))
    d20 = tmp_path / "ml-20m"
    d20.mkdir()
    (d20 / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "".join(
        f"{u},{i},3.5,{t}\n" for u, i, _, t in rows_for()))
    (d20 / "movies.csv").write_text("movieId,title,genres\n" + "".join(
        f'{i},"{TITLE}, The",Drama\n' for i in range(10, 31)), encoding="utf-8")
    use_folder_as(monkeypatch, "ml-1m")
    use_folder_as(monkeypatch, "ml-20m")
    a = load_dataset("ml-1m", mirror=str(tmp_path))
    b = load_dataset("ml-20m", mirror=str(tmp_path))
    assert a.n_interactions == b.n_interactions == 18
    assert np.array_equal(a.items, b.items)
    assert TITLE in a.titles and f"{TITLE}, The" in b.titles


def test_sequence_file_keeps_file_order(tmp_path, monkeypatch):
    d = tmp_path / "amazon-beauty"
    d.mkdir()
    (d / "beauty.txt").write_text("1 5\n1 3\n2 9\n1 4\n2 1\n2 2\n1 8\n1 7\n2 6\n2 3\n")
    use_folder_as(monkeypatch, "amazon-beauty")
    data = load_dataset("amazon-beauty", mirror=str(tmp_path))
    seq0 = data.item_raw_ids[data.items[data.offsets[0]:data.offsets[1]]]
    assert seq0.tolist() == [5, 3, 4, 8, 7]


def test_equal_timestamps_keep_file_order_and_min_interactions(tmp_path, monkeypatch):
    rows = [(1, 30, 4, 5), (1, 20, 4, 5), (1, 10, 4, 1), (1, 40, 4, 5), (1, 50, 4, 9),
            (2, 11, 4, 1), (2, 12, 4, 2), (2, 13, 4, 3)]       # user 2: only 3 interactions
    write_ml100k(tmp_path / "ml-100k", rows)
    use_folder_as(monkeypatch, "ml-100k")
    data = load_dataset("ml-100k", mirror=str(tmp_path))
    assert data.n_users == 1 and data.dropped_users == 1 and data.dropped_interactions == 3
    assert data.item_raw_ids[data.items].tolist() == [10, 30, 20, 40, 50]
    assert load_dataset("ml-100k", mirror=str(tmp_path), min_user_interactions=3).n_users == 2


def test_checksum_error_names_file_and_expected_digest(tmp_path):
    d = tmp_path / "ml-100k"
    write_ml100k(d, rows_for())
    with pytest.raises(DataError) as e:
        load_dataset("ml-100k", mirror=str(tmp_path))
    assert str(d / "u.data") in str(e.value)
    assert fetch.SOURCES["ml-100k"].file_checksums["u.data"].split(":")[1] in str(e.value)


def test_zip_in_mirror_is_verified_and_unpacked_atomically(tmp_path, monkeypatch, isolated_cache,
                                                           capsys):
    src_dir = tmp_path / "src"
    write_ml100k(src_dir / "ml-100k", rows_for())
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with zipfile.ZipFile(mirror / "ml-100k.zip", "w") as zf:
        for f in (src_dir / "ml-100k").iterdir():
            zf.write(f, f"ml-100k/{f.name}")
    good = "md5:" + fetch.file_digest(mirror / "ml-100k.zip", "md5")
    use_folder_as(monkeypatch, "ml-100k", zip_checksum=good)
    assert load_dataset("ml-100k", mirror=str(mirror)).n_interactions == 18
    assert (isolated_cache / "raw" / "ml-100k" / "u.data").exists()
    # steps that take long without epochs say so (a bar on a terminal, lines in a log)
    said = capsys.readouterr().err.splitlines()
    assert "unpacking ml-100k.zip ..." in said
    assert any(line.startswith("unpacking ml-100k.zip: done in ") for line in said)
    assert any(line.startswith("preprocessing ml-100k (once; cached in ") for line in said)

    # A truncated zip: a clear error naming it and the expected checksum, nothing in the cache.
    trunc = tmp_path / "trunc"
    trunc.mkdir()
    (trunc / "ml-100k.zip").write_bytes((mirror / "ml-100k.zip").read_bytes()[:200])
    monkeypatch.setenv("RECSYS_DATA_CACHE", str(tmp_path / "cache2"))
    with pytest.raises(DataError, match=r"ml-100k\.zip.*expected md5 " + good[4:]):
        fetch.raw_dir("ml-100k", trunc)
    assert not (tmp_path / "cache2" / "raw" / "ml-100k").exists()
    leftovers = list((tmp_path / "cache2").rglob("*")) if (tmp_path / "cache2").exists() else []
    assert [p for p in leftovers if p.is_file()] == []


def test_parquet_table_is_written_once_and_reused(tmp_path, monkeypatch, isolated_cache):
    write_ml100k(tmp_path / "ml-100k", rows_for())
    use_folder_as(monkeypatch, "ml-100k")
    first, _ = interactions_table("ml-100k", mirror=str(tmp_path))
    parquet = isolated_cache / "processed" / "ml-100k" / "interactions.parquet"
    assert parquet.exists()
    (tmp_path / "ml-100k" / "u.data").unlink()          # the raw file is no longer needed
    again, titles = interactions_table("ml-100k", mirror=str(tmp_path))
    assert again.equals(first) and TITLE in titles.values()


def test_synthetic_is_deterministic_and_configurable():
    a = load_dataset("synthetic", synthetic={"n_users": 50, "n_items": 40, "seed": 3})
    b = load_dataset("synthetic", synthetic={"n_users": 50, "n_items": 40, "seed": 3})
    c = load_dataset("synthetic", synthetic={"n_users": 50, "n_items": 40, "seed": 4})
    assert np.array_equal(a.items, b.items) and not np.array_equal(a.items, c.items)
    assert a.n_users == 50 and a.n_items <= 40


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(DataError, match="valid: .*ml-100k"):
        load_dataset("ml-7k")


def stats(*args):
    out = subprocess.run([sys.executable, "-m", "recsys_core.data", "stats", *args, "--json"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_stats_cli_on_real_ml100k_and_beauty(mirror):
    ml = stats("ml-100k")
    assert (ml["users"], ml["items"], ml["interactions"]) == (943, 1682, 100_000)
    assert ml["sparsity"] == pytest.approx(1 - 100_000 / (943 * 1682))
    beauty = stats("amazon-beauty")
    assert (beauty["users"], beauty["items"], beauty["interactions"]) == (40_226, 54_542, 353_962)
