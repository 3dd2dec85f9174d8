"""The COMPLETED cells of a sweep, one line each (`CELL_DIR DATASET`), for the device scripts:
study_call.sh (which datasets a call finished cells of) and study_gpu.sh's study-analyses
phase (which runs to analyse: `--dataset D --with-checkpoint`).

    python -m jobs.finished SWEEP [--dataset D] [--with-checkpoint]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from jobs.pack import completed


def finished_cells(sweep: Path, dataset: str | None = None,
                   with_checkpoint: bool = False) -> list[tuple[Path, str]]:
    """(cell folder, dataset) of every COMPLETED cell, in folder order; `with_checkpoint`: only
    those whose best_model.pt is still there (what an analysis reads)."""
    found = []
    for cell in sorted(Path(sweep, "cells").glob("*/")):
        if not completed(str(cell)) or (with_checkpoint and not (cell / "best_model.pt").exists()):
            continue
        name = json.loads((cell / "cell.json").read_text())["config"]["dataset"]
        if dataset is None or name == dataset:
            found.append((cell, name))
    return found


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m jobs.finished", description=__doc__.splitlines()[0])
    p.add_argument("sweep", type=Path)
    p.add_argument("--dataset")
    p.add_argument("--with-checkpoint", action="store_true")
    args = p.parse_args(argv)
    for cell, name in finished_cells(args.sweep, args.dataset, args.with_checkpoint):
        print(cell, name)


if __name__ == "__main__":
    main()
