"""`python -m recsys_core.analysis {geometry,longtail,latency,combine} ...`

    geometry RUN [RUN ...] --out DIR [--k 10] [--tsne-points 2000] [--tsne-iterations 750]
    longtail RUN [RUN ...] --out DIR [--k 10] [--head 0.2] [--tail 0.5] [--top 50]
    latency [RUN ...] --out DIR [--models sasrec bert4rec xlstm] [--lengths 64:1536:64]
            [--batch 32] [--dim 256] [--blocks 4] [--heads 4] [--items 10678]
            [--warmup 3] [--repeats 10] [--device auto|cpu|cuda] [--precision auto|fp32|bf16]
            [--threads N]
    combine DIR [DIR ...] --out DIR

A RUN is a run folder (result.json, best_model.pt) or a sweep folder (its completed cells).
Each writes tables (md + csv) and a PNG figure into --out. Latency with RUNs takes each run's
model and sizes; without, the --models at the given sizes. Combine brings together the
geometry.csv and longtail.csv found under each DIR (analyses done in slices) into one table
per kind and one per dataset and model (mean ± std over seeds); a run in several tables keeps
the newest table's row.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m recsys_core.analysis",
                                description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="analysis", required=True)
    g = sub.add_parser("geometry", help="item-embedding geometry (RQ4)")
    g.add_argument("runs", nargs="+")
    g.add_argument("--k", type=int, default=10)
    g.add_argument("--tsne-points", type=int, default=2000)
    g.add_argument("--tsne-iterations", type=int, default=750)
    lt = sub.add_parser("longtail", help="popularity bias and long-tail accuracy")
    lt.add_argument("runs", nargs="+")
    lt.add_argument("--k", type=int, default=10)
    lt.add_argument("--head", type=float, default=0.2, help="share of items in the head")
    lt.add_argument("--tail", type=float, default=0.5, help="share of items in the tail")
    lt.add_argument("--top", type=int, default=50, help="most recommended items listed")
    la = sub.add_parser("latency", help="inference latency against sequence length")
    la.add_argument("runs", nargs="*")
    la.add_argument("--models", nargs="+", default=["sasrec", "bert4rec", "xlstm"])
    la.add_argument("--lengths", nargs="+", default=["64:1536:64"],
                    help="lengths, or START:STOP:STEP (inclusive)")
    la.add_argument("--batch", type=int, default=32)
    la.add_argument("--dim", type=int, default=256)
    la.add_argument("--blocks", type=int, default=4)
    la.add_argument("--heads", type=int, default=4)
    la.add_argument("--items", type=int, default=10_678)
    la.add_argument("--warmup", type=int, default=3)
    la.add_argument("--repeats", type=int, default=10)
    la.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    la.add_argument("--threads", type=int, default=None, help="CPU: torch intra-op threads")
    la.add_argument("--tables", nargs="+", type=Path, default=None,
                    help="fit these latency.csv tables (or folders holding one), measured "
                         "apart, as one; nothing is measured")
    for s in (g, lt, la):
        s.add_argument("--device", default="auto" if s is la else "cpu",
                       choices=("auto", "cpu", "cuda"))
    co = sub.add_parser("combine", help="one set of tables from geometry/longtail outputs")
    co.add_argument("dirs", nargs="+", help="folders searched for geometry.csv, longtail.csv")
    for s in (g, lt, la, co):
        s.add_argument("--out", type=Path, required=True)
    return p


def combine(dirs: list[str], out: Path) -> int:
    from recsys_core.analysis.combine import CombineError, combine, shown_by_model
    from recsys_core.render import markdown_table
    try:
        tables, notes = combine(dirs, out)
    except CombineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for kind, table in tables.items():
        print(f"{kind} by model:\n" + markdown_table(shown_by_model(table)), end="")
    for note in notes:
        print(f"note: {note}")
    print(f"→ {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        print(f"error: --out {args.out}: a file, not a folder for the analysis", file=sys.stderr)
        return 2
    if args.analysis == "combine":
        return combine(args.dirs, args.out)
    from recsys_core.analysis import run_dirs
    from recsys_core.render import markdown_table
    try:
        runs = run_dirs(args.runs)
        measured = None
        if getattr(args, "tables", None):     # read and checked before anything is written
            from recsys_core.analysis.latency import read_tables
            measured = read_tables(args.tables)
    except (FileNotFoundError, ValueError) as e:     # no run there; a broken result.json
        print(f"error: {e}", file=sys.stderr)
        return 2
    device = args.device
    if device != "cpu":
        import torch
        if device == "cuda" and not torch.cuda.is_available():
            print("error: --device cuda but no CUDA device is visible here (use --device cpu, "
                  "or auto)", file=sys.stderr)
            return 2
        if device == "auto" and args.analysis != "latency":
            device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.analysis in ("geometry", "longtail"):
        try:
            if args.analysis == "geometry":
                from recsys_core.analysis import geometry
                table = geometry.analyse(runs, args.out, k=args.k, tsne_points=args.tsne_points,
                                         tsne_iterations=args.tsne_iterations, device=device)
            else:
                from recsys_core.analysis import longtail
                table = longtail.analyse(runs, args.out, k=args.k, head=args.head,
                                         tail=args.tail, top=args.top, device=device)
        except (FileNotFoundError, ValueError) as e:    # a run's weights missing or unreadable
            print(f"error: {e}", file=sys.stderr)
            return 2
    else:
        from recsys_core.analysis import latency
        lengths = latency.parse_lengths(args.lengths)
        _, table = latency.analyse(args.out, args.models, lengths, runs or None, measured,
                                   batch=args.batch, dim=args.dim, blocks=args.blocks,
                                   heads=args.heads, n_items=args.items, device=device,
                                   warmup=args.warmup, repeats=args.repeats,
                                   precision=args.precision, threads=args.threads)
    print(markdown_table(table), end="")
    print(f"→ {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
