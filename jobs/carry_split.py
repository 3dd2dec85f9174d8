"""A file too big to travel in one device call, cut into parts that each fit beside the tree.

A device call takes the tracked tree and the carried paths, within one size limit. The tree
grows with every session's results (43.4 MB of tracked files in session 24), and study-long's
packed checkpoints (42 MB after session 23) no longer fit beside it: that session's calls were
refused at 64.4 MB in all and taken at 61.9 MB. So the state travels in parts, one call each,
on the same warm machine: each call copies its part to /tmp/parts, the last one joins them.

    python -m jobs.carry_split .study/carry-long/long-state.tgz --with .whl \\
            --once .study/carry-long/data1m.tgz --out .study/carry

writes `.study/carry-1/long-state.tgz.part-01` (beside `--once`'s files), `.study/carry-2/…`,
and prints each call's `carry` list. On the device, every call starts with
`mkdir -p /tmp/parts && cp .study/carry-N/* /tmp/parts/`, and the last one reads the whole file
as `cat /tmp/parts/long-state.tgz.part-* | tar xz -C DIR` (the parts' numbers sort in order).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

LIMIT_BYTES = 61_500_000   # what travels in all: refused at 64.4 MB, taken at 61.9 MB (session 24)


def tree_bytes(repo: Path) -> int:
    """What travels of the tree: tracked files and untracked ones git does not ignore."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=repo, check=True,
                           capture_output=True).stdout.split(b"\0")
    return sum((repo / n.decode()).stat().st_size for n in names
               if n and (repo / n.decode()).is_file())


def path_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def earlier_parts(out: Path, big: Path, once: list[Path]) -> list[Path]:
    """The folders OUT-N already there, each holding only what a split of `big` writes (its
    parts and the --once files); SystemExit naming any other file, which a new split would
    have deleted."""
    ours = {p.name for p in once}
    found = [d for d in out.parent.glob(f"{out.name}-*")
             if d.name[len(out.name) + 1:].isdigit()]
    for d in found:
        for f in d.iterdir() if d.is_dir() else [d]:
            if not (f.is_file() and (f.name.startswith(f"{big.name}.part-") or f.name in ours)):
                raise SystemExit(f"carry_split: {f}: not a part of {big.name} nor a --once file; "
                                 f"move it or choose another --out")
    return found


def split(big: Path, out: Path, room: int, once: list[Path]) -> list[Path]:
    """Folders OUT-1, OUT-2, … each with one part of `big`, at most `room` bytes a folder;
    `once`'s files go in the first, beside a smaller part. Returns the folders in call order."""
    once_bytes = sum(p.stat().st_size for p in once)
    if once_bytes >= room:
        raise SystemExit(f"carry_split: the --once files ({once_bytes:,} bytes) leave no room "
                         f"in one call ({room:,} bytes)")
    sizes, left = [], big.stat().st_size
    while left > 0:
        sizes.append(min(room - (once_bytes if not sizes else 0), left))
        left -= sizes[-1]
    for old in earlier_parts(out, big, once):   # a stale part would join the new file's
        shutil.rmtree(old)
    folders = [out.parent / f"{out.name}-{i}" for i in range(1, len(sizes) + 1)]
    with big.open("rb") as f:
        for i, (folder, n) in enumerate(zip(folders, sizes), 1):
            folder.mkdir(parents=True)
            (folder / f"{big.name}.part-{i:02d}").write_bytes(f.read(n))
    for p in once:
        shutil.copy2(p, folders[0] / p.name)
    return folders


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.carry_split", description=__doc__.split("\n")[0])
    p.add_argument("file", type=Path, help="the file to cut (e.g. a .tgz of a sweep's state)")
    p.add_argument("--out", type=Path, required=True, help="folders OUT-1, OUT-2, … are written")
    p.add_argument("--with", dest="also", type=Path, nargs="*", default=[],
                   help="paths every call carries too (e.g. .whl)")
    p.add_argument("--once", type=Path, nargs="*", default=[],
                   help="files one call carries beside its part (the first; e.g. the data)")
    p.add_argument("--repo", type=Path, default=Path("."))
    p.add_argument("--limit", type=int, default=LIMIT_BYTES, help="bytes a call may carry in all")
    args = p.parse_args(argv)
    for path in [args.file, *args.also, *args.once]:
        if not path.exists():
            print(f"carry_split: {path}: no such file or folder", file=sys.stderr)
            return 2
    room = args.limit - tree_bytes(args.repo) - sum(path_bytes(a) for a in args.also)
    if room <= 0:
        print(f"carry_split: the tree and {' '.join(map(str, args.also))} already "
              f"take the {args.limit:,} bytes", file=sys.stderr)
        return 2
    folders = split(args.file, args.out, room, args.once)
    for i, folder in enumerate(folders, 1):
        carry = [str(a) for a in args.also] + [str(folder)]
        print(f"call {i}: carry {carry} ({path_bytes(folder):,} bytes of {room:,})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
