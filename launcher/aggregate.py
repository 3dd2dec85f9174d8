"""`python -m launcher aggregate SWEEP [SWEEP ...] [--out DIR] [--where KEY=V1,V2 ...]
[--no-plots] [--versus MODEL ...]`: a sweep's results (or several sweeps' as one, a cell copied
into two of them counted once; --out then needed; --where: only the matching cells) → the study's
tables (Markdown, CSV, LaTeX), plots and one Parquet file of every cell, in OUT (default
SWEEP/aggregate):

    main            model × dataset × max_len (× every other parameter that varies, but the
                    seed): test Recall/NDCG/MRR@10 mean ± std over seeds, n_seeds, parameters,
                    best epochs / epoch cap (cells within 10% of the cap counted), epoch time,
                    the cells that did not complete, cold-start users' metrics where there are
                    any; the best mean per dataset in bold (md, tex) or flagged in
                    `<metric>_best` (csv)
    paired          per dataset and configuration, the best model (mean test Recall@10) against
                    every other: paired t-test over the seeds both completed, 95% CI of the
                    mean difference
    paired_vs_M     --versus M: the same with model M in place of the best (M − model), in
                    every group that has M (e.g. `--versus xlstm`: xLSTM against the others)
    compute         GPU-hours (wall time × gpus × nodes) and CPU-hours per model and in all;
                    where the cells' time went (queue, start, setup, epochs, saving, final
                    test) and the share of it that was overhead, not training
    longtail        only where cells recorded it (those trained since results hold the test
                    split's long tail): per configuration, Recall@10 of users whose target is
                    a head (top 20% of items by train interactions), mid or tail (bottom 50%)
                    item, the tail's share of the top-10 lists, catalogue coverage, Gini of
                    recommendations: mean ± std over seeds, n_seeds (RQ2)
    geometry        likewise, the item embeddings' geometry (RQ4): dimensions for 90% of the
                    variance, participation ratio, anisotropy, hubness Gini and skewness
    cells           every cell: state, reason, metrics, wall time, GPU- and CPU-hours
    states          cells per state: COMPLETED, FAILED, CANCELLED, MISSING, ...
    summary.md      all of it, plus every result file that could not be read
    results.parquet one row per manifest cell: id, name, state, reason, resources, every
                    configuration value (the cell's parameters, TrainConfig's defaults filled
                    in), every other field of its result.json as the file has it (metrics,
                    timings, runtime settings, versions; null for a cell without one), GPU- and
                    CPU-hours: for analyses of your own (pandas.read_parquet)
    *.png           validation curves, Recall@10 against max_len, accuracy against epoch time

Reading (collect.py): cells and their parameters from the manifest; the rest from every cell's
result.json through `recsys_core.train.results.read_results` (one pyarrow JSON parse over all
files; an unreadable file is reported by name and its cell counted FAILED; the rows are cached
in SWEEP/.aggregate-cache/ by file size and mtime, so aggregating again decodes only new or
changed files); states from the launcher's status when the sweep was submitted and SLURM
answers, else from the result files (a cell without one is MISSING). The statistics are in
tables.py, the numbers for people in display.py, Markdown and LaTeX in recsys_core/render.py,
the figures in plots.py.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from launcher import display, tables
from launcher.collect import (CACHE, RECORDED, Aggregate,  # noqa: F401  (CACHE: bench_aggregate)
                              load)
from recsys_core.atomic import atomic_write
from recsys_core.render import write_table

TITLES = {"main": "Results", "paired": "Paired t-tests: best model vs others",
          "overview": "Test Recall@10 per model and dataset (mean ± std over seeds; bold: the "
                      "best of each dataset)",
          "cost": "Accuracy against cost (means per configuration; epoch_time_s: the mean "
                  "epoch, epoch_time_median_s: the steady one; time_to_best_s: the epochs up to "
                  "the best one, or best epoch × mean epoch for results before that record; "
                  "gpu_s = wall × gpus × nodes; cells sharing a GPU slow each other)",
          "compute": "Compute (GPU-hours = wall time × gpus × nodes; CPU-hours: cpus × nodes, "
                     "1 core where unset; the cells' time in seconds: queue wait, process "
                     "start, setup, epochs, saving, final test; overhead_share: the share of "
                     "start to result outside training epochs)",
          "longtail": "Long tail of the test split (mean ± std over seeds; head: the top 20% "
                      "of items by train interactions, tail: the bottom 50%; Recall@10 of the "
                      "users whose target is in each group; tail share, coverage and Gini of "
                      "the top-10 lists)",
          "geometry": "Item-embedding geometry of the best model (mean ± std over seeds; "
                      "hubness: how often an item is among the others' 10 cosine nearest "
                      "neighbours; anisotropy: mean cosine of item pairs)",
          "states": "Cell states"}


def write(agg: Aggregate, out: Path, plots: bool = True, versus: tuple[str, ...] = ()
          ) -> dict[str, str]:
    """Every table, results.parquet, the plots and summary.md into out; for each model of
    `versus`, paired_vs_MODEL: that model against every other, per comparison group. Returns
    the tables' Markdown by name."""
    out.mkdir(parents=True, exist_ok=True)
    main = tables.main_table(agg)
    paired = tables.paired_tests(agg, main)
    compute, cells = tables.compute_table(agg), tables.cells_table(agg)
    cost = tables.cost_table(agg, main)
    overview, rows = tables.overview_table(main, agg.keys)
    states = tables.states_table(agg)
    n = len(agg.keys)
    md = {
        "main": write_table(out, "main", main, display.display_main(main, agg.keys), n),
        "overview": write_table(out, "overview", overview,
                                display.display_overview(overview, rows), len(rows)),
        "paired": write_table(out, "paired", paired, display.display_paired(paired), n + 2),
        "cost": write_table(out, "cost", cost, display.display_numbers(cost), n),
        "compute": write_table(out, "compute", compute, display.display_numbers(compute), 1),
        "states": write_table(out, "states", states, states, 1),
        "cells": write_table(out, "cells", cells, display.display_numbers(cells), 4),
    }
    for group in RECORDED:     # sweeps of cells trained before results held it: no table
        if tables.has_recorded(agg, group):
            table = tables.recorded_table(agg, group)
            md[group] = write_table(out, group, table,
                                    display.display_recorded(table, agg.keys, group), n)
    for model in versus:
        table = tables.paired_tests(agg, main, reference=model).rename(
            columns={"best": "reference"})
        md[f"paired_vs_{model}"] = write_table(
            out, f"paired_vs_{model}", table,
            display.display_paired(table.rename(columns={"reference": "best"}), "reference"),
            n + 2)
    write_parquet(agg, out / "results.parquet")
    figures = []
    if plots:
        from launcher import plots as plotting     # matplotlib: only when drawing
        figures = plotting.write_all(agg, main, out)
    lines = [f"# Sweep {agg.name}", "",
             f"{len(agg.cells)} cells; states: {agg.state_source}. Metrics are test-split means "
             "± sample std over seeds; bold = best per dataset.", ""]
    if agg.problems:
        lines += [f"**{len(agg.problems)} result file(s) could not be read and were skipped:**", ""]
        lines += [f"- `{p}`: {e}" for p, e in agg.problems.items()] + [""]
    for key, title in TITLES.items():
        if key in md:
            lines += [f"## {title}", "", md[key], ""]
    for model in versus:
        lines += [f"## Paired t-tests: {model} vs others", "", md[f"paired_vs_{model}"], ""]
    lines += [f"![{f.stem}]({f.name})" for f in figures]
    lines += ["", "Every cell: [cells.md](cells.md), [cells.csv](cells.csv); every value: "
              "results.parquet.", ""]
    (out / "summary.md").write_text("\n".join(lines))
    return md


def write_parquet(agg: Aggregate, path: Path) -> None:
    first = ["id", "name", "state", "reason"]
    frame = agg.cells[first + [c for c in agg.cells.columns if c not in first]]
    table = pa.Table.from_pandas(frame, preserve_index=False)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def run_cli(args) -> int:
    sweeps = list(args.sweep)
    if len(sweeps) > 1 and not args.out:
        print(f"error: {len(sweeps)} sweeps aggregated as one need --out (no sweep's own "
              "aggregate/ is theirs)", file=sys.stderr)
        return 2
    try:
        agg = load(sweeps, where=args.where)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    models = sorted(agg.cells["model"].dropna().unique())
    unknown = [m for m in args.versus if m not in models]
    if unknown:
        print(f"error: --versus {', '.join(unknown)}: {' + '.join(sweeps)} has no cell of that "
              f"model; its models: {', '.join(models)}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(sweeps[0]) / "aggregate"
    if out.exists() and not out.is_dir():
        print(f"error: --out {out}: a file, not a folder for the tables", file=sys.stderr)
        return 2
    for sweep in map(Path, sweeps):   # its cells/ holds one folder per cell, nothing else
        root = sweep.resolve()
        if out.resolve() == root or out.resolve().is_relative_to(root / "cells"):
            print(f"error: --out {out}: the sweep folder {sweep} or its cells/; write the "
                  f"tables beside them, e.g. {sweep / 'aggregate'}", file=sys.stderr)
            return 2
    write(agg, out, plots=not args.no_plots, versus=tuple(args.versus))
    for path, problem in agg.problems.items():
        print(f"warning: skipped {path}: {problem}", file=sys.stderr)
    counts = tables.states_table(agg)
    print(f"{len(agg.cells)} cells (" + ", ".join(
        f"{s} {n}" for s, n in zip(counts["state"][:-1], counts["cells"][:-1])) + f") → {out}")
    return 0
