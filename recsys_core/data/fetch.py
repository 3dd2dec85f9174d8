"""Getting raw dataset files onto disk: a local mirror first, else the GroupLens download.

Resolution order for a dataset's raw files (`raw_dir(name)`):
1. the cache (`$RECSYS_DATA_CACHE`, default ~/.cache/recsys_core) if it was unpacked there before;
2. a mirror directory (`--data-mirror` / `$RECSYS_DATA_MIRROR`) holding either the unpacked
   GroupLens folder (`ml-100k/u.data`, ...) or the zip (`ml-100k.zip`);
3. the GroupLens download URL.
Every file that has a known checksum is verified; a zip is verified before it is unpacked, and
unpacking goes to a temporary directory that is renamed into place only when complete, so a
corrupt or interrupted fetch leaves nothing half-written in the cache.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import time
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

MIRROR_ENV = "RECSYS_DATA_MIRROR"
CACHE_ENV = "RECSYS_DATA_CACHE"
GROUPLENS = "https://files.grouplens.org/datasets/movielens/"


class DataError(RuntimeError):
    """A dataset file is missing, corrupt or malformed. The message names the file."""


@dataclass(frozen=True)
class Source:
    """Where a dataset's raw files come from and how to recognise intact copies.

    Checksums are written `algo:hexdigest`; algo is sha256, md5 (what GroupLens publishes
    beside its zips) or gitblob (`git hash-object`, the fingerprint SOURCES.md gives for
    files whose sha256 was never published).
    """

    folder: str                          # GroupLens folder name inside the zip / mirror
    required: tuple[str, ...]            # files that must exist to read the dataset
    url: str | None = None               # the zip to download; None: mirror only
    zip_checksum: str | None = None
    file_checksums: dict[str, str] = field(default_factory=dict)
    obtain: str = ""                     # no public download: how to get the files


SOURCES: dict[str, Source] = {
    "ml-100k": Source(
        folder="ml-100k",
        required=("u.data", "u.item"),
        url=GROUPLENS + "ml-100k.zip",
        zip_checksum="md5:0e33842e24a9c977be4e0107933c0723",
        file_checksums={
            "u.data": "sha256:06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
            "u.item": "sha256:553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
        },
    ),
    "ml-1m": Source(
        folder="ml-1m",
        required=("ratings.dat", "movies.dat"),
        url=GROUPLENS + "ml-1m.zip",
        zip_checksum="md5:c4d9eecfca2ab87c1945afe126590906",
        file_checksums={
            "ratings.dat": "gitblob:77a7c4b150f588c23bb9e1f068aa996c0b413695",
            "movies.dat": "sha256:0140fc2356357c1a851d0f52e893a1e4d3696df632c4141cea8d5bc3d621f0b9",
        },
    ),
    "ml-10m": Source(
        folder="ml-10M100K",
        required=("ratings.dat", "movies.dat"),
        url=GROUPLENS + "ml-10m.zip",
        zip_checksum="md5:ce571fd55effeba0271552578f2648bd",
    ),
    "ml-20m": Source(
        folder="ml-20m",
        required=("ratings.csv", "movies.csv"),
        url=GROUPLENS + "ml-20m.zip",
        zip_checksum="md5:cd245b17a1ae2cc31bb14903e1204af3",
    ),
    # Benchmark sequence files of the SASRec/BERT4Rec papers: no public zip, mirror only.
    "amazon-beauty": Source(
        folder="amazon-beauty",
        required=("beauty.txt",),
        file_checksums={
            "beauty.txt": "sha256:f480b7a7403852342ffd8f9809bb30697dd669be31813d0e204b698fec86ef49",
        },
    ),
    "steam": Source(
        folder="steam",
        required=("steam.txt",),
        file_checksums={
            # Kang & McAuley's Steam.txt as given by its Git LFS pointer (42,541,998 bytes).
            "steam.txt": "sha256:4df1f5feac169a522008956ba5a50fee4e9ce2c0c817cabfd463ac36df05f023",
        },
    ),
    "ml-1m-bert4rec": Source(folder="ml-1m-bert4rec", required=("ml-1m.txt",)),
    "ml-20m-bert4rec": Source(folder="ml-20m-bert4rec", required=("ml-20m.txt",)),
    # Listening logs under a licence: mirror only (formats: readers.read_listening_events).
    "music4all": Source(folder="music4all", required=("listening_history.csv",), obtain=(
        "Music4All (Santana et al., IWSSIP 2020) is licensed for research on request to its "
        "authors; listening_history.csv is in the archive they send")),
    "music4all-onion": Source(
        folder="music4all-onion", required=("userid_trackid_timestamp.tsv",), obtain=(
            "Music4All-Onion (Moscati et al., 2022) is distributed by its authors under a licence "
            "for research use; decompress their userid_trackid_timestamp.tsv.bz2 (bzip2 -dk)")),
}


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "recsys_core")


def mirror_root(mirror: str | os.PathLike | None = None) -> Path | None:
    value = mirror if mirror is not None else os.environ.get(MIRROR_ENV)
    return Path(value).expanduser() if value else None


def file_digest(path: Path, algo: str) -> str:
    """Hex digest of a file; `gitblob` is git's object id of the file's bytes."""
    if algo == "gitblob":
        h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    elif algo in ("sha256", "md5"):
        h = hashlib.new(algo)
    else:
        raise ValueError(f"unknown checksum algorithm {algo!r}; valid: sha256, md5, gitblob")
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, checksum: str | None) -> None:
    if checksum is None:
        return
    algo, expected = checksum.split(":", 1)
    actual = file_digest(path, algo)
    if actual != expected:
        raise DataError(
            f"{path}: checksum mismatch, expected {algo} {expected}, got {actual} "
            f"(the file is corrupt or truncated; delete it or fix the mirror)")


def raw_dir(name: str, mirror: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Directory holding `name`'s verified raw files, fetching them if needed."""
    if name not in SOURCES:
        raise DataError(f"no raw source for dataset {name!r}; valid: {', '.join(sorted(SOURCES))}")
    src = SOURCES[name]
    cached = cache_root() / "raw" / src.folder
    if _complete(cached, src):
        return cached  # verified when it was put there
    root = mirror_root(mirror)
    if root is not None:
        folder = root / src.folder
        if _complete(folder, src):
            for fname in src.required:
                verify(folder / fname, src.file_checksums.get(fname))
            return folder  # read in place: the mirror is the user's, the cache stays empty
        zip_path = root / f"{src.folder}.zip"
        if not zip_path.exists() and name != src.folder:
            zip_path = root / f"{name}.zip"
        if zip_path.exists():
            return _unpack(zip_path, src, cached)
        if src.url is None:
            raise DataError(
                f"dataset {name!r}: no {folder}/{{{','.join(src.required)}}} nor {zip_path} "
                f"in the mirror {root}" + (f"; {src.obtain}" if src.obtain else ""))
    if src.url is None:
        raise DataError(
            f"dataset {name!r} has no public download; put {src.folder}/{src.required[0]} "
            f"in a mirror directory and pass --data-mirror or set {MIRROR_ENV}"
            + (f"; {src.obtain}" if src.obtain else ""))
    if not download:
        raise DataError(f"dataset {name!r} is not in the cache {cached} and downloads are off")
    return _unpack(_download(src), src, cached)


class progress:
    """A progress bar on a terminal (tqdm); elsewhere (a SLURM log, a pipe) one line when the
    step starts and one when it ends, with its time."""

    def __init__(self, label: str, total: int | None = None, unit: str = "B"):
        self.label, self.t0 = label, time.time()
        from tqdm import tqdm
        self.bar = tqdm(total=total, unit=unit, unit_scale=True, desc=label, file=sys.stderr,
                        disable=not sys.stderr.isatty(), leave=False)
        if self.bar.disable:
            print(f"{label} ...", file=sys.stderr, flush=True)

    def __enter__(self):
        return self.bar

    def __exit__(self, kind, *_):
        self.bar.close()
        if kind is None:
            print(f"{self.label}: done in {time.time() - self.t0:.1f} s", file=sys.stderr,
                  flush=True)


def _complete(folder: Path, src: Source) -> bool:
    return all((folder / f).is_file() for f in src.required)


def _download(src: Source) -> Path:
    downloads = cache_root() / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    target = downloads / Path(src.url).name
    if target.exists():
        return target
    fd, tmp = tempfile.mkstemp(dir=downloads, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(src.url, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with progress(f"downloading {src.url}", total, unit="B") as bar:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
        verify(Path(tmp), src.zip_checksum)
        os.replace(tmp, target)
    except OSError as e:  # URLError is an OSError: no network, DNS, HTTP errors
        Path(tmp).unlink(missing_ok=True)
        raise DataError(
            f"cannot download {src.url} ({e}); on a machine without internet put "
            f"{src.folder}/{{{','.join(src.required)}}} or {src.folder}.zip in a mirror "
            f"directory and pass --data-mirror or set {MIRROR_ENV}") from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _unpack(zip_path: Path, src: Source, dest: Path) -> Path:
    """Verify a zip, extract it next to `dest`, then rename into place."""
    verify(zip_path, src.zip_checksum)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{src.folder}-"))
    try:
        try:
            with zipfile.ZipFile(zip_path) as zf:
                members = zf.infolist()
                with progress(f"unpacking {zip_path.name}", sum(m.file_size for m in members),
                              unit="B") as bar:
                    for m in members:   # each member's CRC is checked as it is extracted
                        zf.extract(m, tmp)
                        bar.update(m.file_size)
        except zipfile.BadZipFile as e:
            raise DataError(f"{zip_path}: not a readable zip or a corrupt member ({e})") from e
        unpacked = tmp / src.folder
        if not _complete(unpacked, src):
            raise DataError(f"{zip_path}: has no {src.folder}/{{{','.join(src.required)}}}")
        for fname in src.required:
            verify(unpacked / fname, src.file_checksums.get(fname))
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(unpacked, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
