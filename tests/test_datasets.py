"""The benchmark files of the study (SOURCES.md): their statistics exactly as published, the
S3Rec one-user-per-line format, and the single-file download path (file:// URLs stand in for
raw.githubusercontent.com: the same urllib code, the same checksum and cache)."""
import hashlib
import json
import subprocess
import sys

import pytest

from recsys_core.data import DataError, fetch, load_dataset, readers

# SOURCES.md's counts: (users, items, interactions) in the file
PUBLISHED = {
    "ml-1m-bert4rec": (6_040, 3_416, 999_611),
    "beauty-s3rec": (22_363, 12_101, 198_502),
    "sports-s3rec": (35_598, 18_357, 296_337),
    "toys-s3rec": (19_412, 11_924, 167_597),
    "yelp-s3rec": (30_431, 20_033, 316_354),
    "video-sasrec": (31_013, 23_715, 287_107),
}


def stats(name: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "recsys_core.data", "stats", name, "--json"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize("name", PUBLISHED)
def test_stats_are_the_published_ones(name, mirror):
    s = stats(name)
    assert (s["file_users"], s["file_items"], s["file_interactions"]) == PUBLISHED[name]
    if name == "video-sasrec":    # users with fewer than 5 interactions exist only here
        assert (s["users"], s["dropped_users"], s["cold_users"]) == (29_341, 1_672, 1_642)
        assert s["interactions"] == 287_107 - s["dropped_interactions"]
    else:
        assert (s["users"], s["items"], s["interactions"]) == PUBLISHED[name]
        assert s["dropped_users"] == s["cold_users"] == 0


def test_user_per_line_format(tmp_path, monkeypatch):
    folder = tmp_path / "s3rec"
    folder.mkdir()
    (folder / "Toys_and_Games.txt").write_text(
        "1 5 6 7 8 9\n2 9  8 7 6 5\n3 5 6\n4 7 8 9\n")      # a double space is still a space
    monkeypatch.setitem(fetch.SOURCES, "toys-s3rec", fetch.Source(
        folder="s3rec", required=("Toys_and_Games.txt",)))
    data = load_dataset("toys-s3rec", mirror=str(tmp_path))
    assert (data.n_users, data.n_items, data.n_interactions) == (2, 5, 10)
    assert data.items[:5].tolist() == [1, 2, 3, 4, 5]          # file order kept
    assert data.items[5:].tolist() == [5, 4, 3, 2, 1]
    # users 3 and 4 (2 and 3 items) are the cold-start users; all their items are known
    assert data.cold_offsets.tolist() == [0, 2, 5] and data.cold_items.tolist() == [1, 2, 3, 4, 5]
    (folder / "Toys_and_Games.txt").write_text("1 5 x\n")
    with pytest.raises(DataError, match="Toys_and_Games.txt: expected integer ids"):
        readers.read_user_lines(folder / "Toys_and_Games.txt")


def test_single_files_download_verified_into_the_cache(tmp_path, monkeypatch, isolated_cache):
    remote = tmp_path / "remote"
    remote.mkdir()
    body = b"1 1\n1 2\n1 3\n2 2\n2 3\n2 1\n"
    (remote / "Video.txt").write_bytes(body)
    good = hashlib.sha256(body).hexdigest()
    src = fetch._file("amazon-video", "Video.txt", (remote).as_uri(), good)
    monkeypatch.setitem(fetch.SOURCES, "video-sasrec", src)
    monkeypatch.delenv("RECSYS_DATA_MIRROR", raising=False)
    data = load_dataset("video-sasrec", min_user_interactions=3)
    assert (data.n_users, data.n_interactions) == (2, 6)
    assert (isolated_cache / "raw" / "amazon-video" / "Video.txt").read_bytes() == body

    bad = fetch._file("amazon-video", "Video.txt", remote.as_uri(), "0" * 64)
    monkeypatch.setitem(fetch.SOURCES, "video-sasrec", bad)
    other = tmp_path / "cache2"
    monkeypatch.setenv("RECSYS_DATA_CACHE", str(other))
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset("video-sasrec")
    assert not (other / "raw" / "amazon-video" / "Video.txt").exists()   # nothing half-right left
    assert not list((other / "raw" / "amazon-video").glob(".part-*"))


def test_every_benchmark_file_has_its_published_checksum_and_url():
    for name in PUBLISHED:
        src = fetch.SOURCES[name]
        (fname,) = src.required
        assert src.file_checksums[fname].startswith("sha256:")
        assert src.file_urls[fname].startswith("https://raw.githubusercontent.com/")
        assert src.file_urls[fname].endswith("/data/" + fname)


def test_a_failed_download_says_what_the_mirror_lacked(tmp_path, monkeypatch, isolated_cache):
    """With a mirror set that lacks the file (or does not exist), the error says so rather
    than advising to set a mirror."""
    gone = tmp_path / "remote-that-is-not-there"
    src = fetch._file("amazon-video", "Video.txt", gone.as_uri(), "0" * 64)
    monkeypatch.setitem(fetch.SOURCES, "video-sasrec", src)
    (tmp_path / "mirror").mkdir()
    (tmp_path / "afile").write_text("not a folder")
    for mirror, says in ((tmp_path / "mirror", f"the mirror {tmp_path / 'mirror'} has no "
                                                "amazon-video/{Video.txt}"),
                         (tmp_path / "nowhere", f"the mirror {tmp_path / 'nowhere'} does not exist"),
                         (tmp_path / "afile", f"the mirror {tmp_path / 'afile'} is a file"),
                         (None, "pass --data-mirror or set RECSYS_DATA_MIRROR")):
        if mirror is None:
            monkeypatch.delenv("RECSYS_DATA_MIRROR", raising=False)
        else:
            monkeypatch.setenv("RECSYS_DATA_MIRROR", str(mirror))
        with pytest.raises(DataError, match="cannot download") as e:
            load_dataset("video-sasrec")
        assert says in str(e.value)


def test_a_data_cache_that_is_a_file_is_one_clear_error(tmp_path, monkeypatch):
    """RECSYS_DATA_CACHE naming a file ended in NotADirectoryError's traceback."""
    afile = tmp_path / "cache"
    afile.write_text("kept")
    monkeypatch.setenv("RECSYS_DATA_CACHE", str(afile))
    with pytest.raises(DataError, match=f"the data cache {afile} is a file, not a folder"):
        load_dataset("ml-100k")
    assert afile.read_text() == "kept"
