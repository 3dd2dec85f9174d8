"""Which unfinished cells' checkpoints come back from a device call (jobs/study_gpu.sh pack) or
go to the next one (jobs/study_merge.py --state): a call returns and carries 64 MiB at most, so
the checkpoints that save the most training seconds per byte go first.

Session 19's pack took the smallest first: four SASMamba cells (L 512 and 1,024) were left out,
one of them 204 epochs (980 s of training) in, for smaller checkpoints, one only 17 epochs in.

    python -m jobs.resume_pick WORK --max-mb 50
    python -m jobs.resume_pick WORK --returned OUT    # what the call's 64 MiB leave

prints each file to pack, relative to WORK (`SWEEP/cells/ID/checkpoint.pt`, its best_model.pt),
and on stderr `left out (restarts from scratch): SWEEP/cells/ID/` for each cell that did not fit.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs.pack import completed

CHECKPOINTS = ("checkpoint.pt", "best_model.pt", "history.parquet")
RETURN_LIMIT_MB = 64.0    # MiB a device call brings back in all (8 files of 16 MiB at most)
LATER_LOGS_MB = 2.0       # what the call still writes after its pack: its last log lines


def trained_seconds(cell_dir: Path) -> float:
    """The epoch seconds a checkpoint saves the next call (its history's epoch times)."""
    try:
        import pandas as pd
        return float(pd.read_parquet(cell_dir / "history.parquet")["epoch_time_s"].sum())
    except (OSError, KeyError, ValueError):
        return 0.0


def size(cell_dir: Path) -> int:
    return sum((cell_dir / n).stat().st_size for n in CHECKPOINTS if (cell_dir / n).exists())


def pick(cell_dirs: list[Path], max_bytes: float) -> tuple[list[Path], list[Path]]:
    """(chosen, left out) of cell folders with a checkpoint: the most training seconds per byte
    first (ties: the smaller first), each that still fits in what `max_bytes` leaves."""
    sizes = {d: size(d) for d in cell_dirs}
    ranked = sorted(cell_dirs, key=lambda d: (-trained_seconds(d) / max(sizes[d], 1), sizes[d]))
    room, chosen, left_out = max_bytes, [], []
    for d in ranked:
        if sizes[d] > room:
            left_out.append(d)
            continue
        room -= sizes[d]
        chosen.append(d)
    return chosen, left_out


def room_mb(returned: Path) -> float:
    """MiB left for checkpoints in a call's return: the limit less what `returned` (the folder
    the device brings back) holds already, its resume parts aside (the pack makes them anew),
    and the logs still to come. A fixed RESUME_MAX_MB of 50 left SASMamba L 1,024 s2023's
    checkpoint, 69 epochs in, on the machine in session 23, with 20 MiB of room unused."""
    used = sum(f.stat().st_size for f in returned.rglob("*")
               if f.is_file() and not f.name.startswith("resume.tgz.part-"))
    return max(0.0, RETURN_LIMIT_MB - LATER_LOGS_MB - used / 1048576)


def unfinished(work: Path) -> list[Path]:
    """The cell folders under WORK's sweeps with a checkpoint and no COMPLETED result (a FAILED
    one of an earlier try is no end: session 10 lost 11 cells' checkpoints to that)."""
    return [d for d in sorted(work.glob("*/cells/*/"))
            if (d / "checkpoint.pt").exists() and not completed(str(d))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.resume_pick",
                                description=__doc__.split("\n")[0])
    p.add_argument("work", type=Path, help="the folder of the call's sweeps")
    limit = p.add_mutually_exclusive_group(required=True)
    limit.add_argument("--max-mb", type=float, help="MiB of checkpoints at most")
    limit.add_argument("--returned", type=Path, help="the folder the call brings back: the "
                       f"checkpoints get what its {RETURN_LIMIT_MB:.0f} MiB leave")
    args = p.parse_args(argv)
    if not args.work.is_dir():
        p.error(f"{args.work}: not a folder (the call's sweeps)")
    if args.max_mb is not None and args.max_mb < 0:
        p.error(f"--max-mb {args.max_mb:g}: a size in MiB is 0 or more")
    if args.max_mb is None:
        args.max_mb = room_mb(args.returned)
        print(f"room for checkpoints: {args.max_mb:.1f} MiB ({RETURN_LIMIT_MB:.0f} less what "
              f"{args.returned} holds and {LATER_LOGS_MB:.0f} for the last logs)", file=sys.stderr)
    chosen, left_out = pick(unfinished(args.work), args.max_mb * 1048576)
    for d in chosen:
        for name in ("checkpoint.pt", "best_model.pt"):
            if (d / name).exists():
                print((d / name).relative_to(args.work))
    for d in left_out:
        print(f"left out (restarts from scratch): {d.relative_to(args.work)}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
