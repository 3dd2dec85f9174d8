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
    file_urls: dict[str, str] = field(default_factory=dict)   # files downloaded one by one
    obtain: str = ""                     # no public download: how to get the files


def _file(folder: str, name: str, repo_url: str | None, sha256: str) -> Source:
    """A dataset of one file, `folder/name` in a mirror; `repo_url`: the folder of the
    repository that published it (None: mirror only)."""
    return Source(folder=folder, required=(name,), file_checksums={name: f"sha256:{sha256}"},
                  file_urls={name: f"{repo_url}/{name}"} if repo_url else {})


_GITHUB = "https://raw.githubusercontent.com/{}/{}/data"
_SASREC = _GITHUB.format("kang205/SASRec", "e3738967fddab206d6eeb4fda433e7a7034dd8b1")
_ICLREC = _GITHUB.format("salesforce/ICLRec", "2890e6c3ff6a22c6699fc19cb863b66786c1cde4")

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
    # The papers' benchmark files: no zip, each file from the repository that published it
    # (raw.githubusercontent.com at a fixed commit), checked by the sha256 of SOURCES.md.
    "amazon-beauty": _file("amazon-beauty", "beauty.txt", _GITHUB.format(
        "antklen/sasrec-bert4rec-recsys23", "29c272e155cad52c8958b04e9e98557526a646e5"),
        "f480b7a7403852342ffd8f9809bb30697dd669be31813d0e204b698fec86ef49"),
    # Kang & McAuley's Steam.txt as given by its Git LFS pointer (42,541,998 bytes): no raw URL.
    "steam": _file("steam", "steam.txt", None,
                   "4df1f5feac169a522008956ba5a50fee4e9ce2c0c817cabfd463ac36df05f023"),
    "ml-1m-bert4rec": _file("ml-1m-bert4rec", "ml-1m.txt", _SASREC,
                            "b725f3acb3986fe3130bffd1e77a74d182a1f51799567a236dbd60270f95b0a2"),
    "ml-20m-bert4rec": Source(folder="ml-20m-bert4rec", required=("ml-20m.txt",)),
    "video-sasrec": _file("amazon-video", "Video.txt", _SASREC,
                          "b7376fe24430743f411dc7f567285657b2adb3f74361cc7ba0aee94f3024b651"),
    "beauty-s3rec": _file("s3rec", "Beauty.txt", _ICLREC,
                          "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8"),
    "sports-s3rec": _file("s3rec", "Sports_and_Outdoors.txt", _ICLREC,
                          "2a095e0648872beb9982408958290f5d655db5be2911c3756b5446de9f0b8de2"),
    "toys-s3rec": _file("s3rec", "Toys_and_Games.txt", _ICLREC,
                        "176c680c688d497598c4a89a03b402c0fe78d795e5db335c2e78dd5f2d778a3f"),
    "yelp-s3rec": _file("s3rec", "Yelp.txt", _ICLREC,
                        "724b219106b81dd2349027da997334ddb6da9fe2f152ad6e0d97a93170f7caed"),
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
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "recsys_core")
    if root.exists() and not root.is_dir():
        raise DataError(f"the data cache {root} is a file, not a folder; point {CACHE_ENV} "
                        "at a folder (or unset it for ~/.cache/recsys_core)")
    return root


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
    tried = None      # what the mirror lacked, for the error of a download that then fails
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
        if src.url is None and not src.file_urls:
            raise DataError(
                f"dataset {name!r}: no {folder}/{{{','.join(src.required)}}} nor {zip_path} "
                f"in the mirror {root}" + (f"; {src.obtain}" if src.obtain else ""))
        tried = (f"the mirror {root} is a file, not a folder" if root.is_file() else
                 f"the mirror {root} does not exist") if not root.is_dir() else \
            f"the mirror {root} has no {src.folder}/{{{','.join(src.required)}}}" + \
            (f" nor {zip_path.name}" if src.url else "")
    if src.url is None and not src.file_urls:
        raise DataError(
            f"dataset {name!r} has no public download; put {src.folder}/{src.required[0]} "
            f"in a mirror directory and pass --data-mirror or set {MIRROR_ENV}"
            + (f"; {src.obtain}" if src.obtain else ""))
    if not download:
        raise DataError(f"dataset {name!r} is not in the cache {cached} and downloads are off")
    if src.url is None:      # the files one by one, each verified, straight into the cache
        cached.mkdir(parents=True, exist_ok=True)
        for fname in src.required:
            if not (cached / fname).is_file():
                _download(src.file_urls[fname], cached / fname, src.file_checksums.get(fname),
                          src, tried)
        return cached
    zip_path = cache_root() / "downloads" / Path(src.url).name
    if not zip_path.exists():
        _download(src.url, zip_path, src.zip_checksum, src, tried)
    return _unpack(zip_path, src, cached)


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


def _download(url: str, target: Path, checksum: str | None, src: Source,
              tried: str | None = None) -> None:
    """url → target, verified before it is renamed into place (a partial or corrupt download
    never sits where a reader looks). `tried`: what the mirror lacked, said if this fails."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with progress(f"downloading {url}", total, unit="B") as bar:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
        verify(Path(tmp), checksum)
        os.replace(tmp, target)
    except OSError as e:  # URLError is an OSError: no network, DNS, HTTP errors
        Path(tmp).unlink(missing_ok=True)
        zipped = f" or {src.folder}.zip" if src.url else ""
        if tried:
            raise DataError(f"cannot download {url} ({e}), and {tried}") from e
        raise DataError(
            f"cannot download {url} ({e}); on a machine without internet put "
            f"{src.folder}/{{{','.join(src.required)}}}{zipped} in a mirror "
            f"directory and pass --data-mirror or set {MIRROR_ENV}") from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
