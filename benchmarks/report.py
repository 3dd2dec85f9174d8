"""The one writer of the benchmarks' tables: OUT/NAME.md (text and GitHub Markdown tables, through
`DataFrame.to_markdown`, i.e. tabulate) and, where a benchmark has one, OUT/NAME.csv (its data,
every column unformatted); and `fresh_process_row`, a table's row measured in a process of its
own."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

MISSING = "–"


def cell(value, spec: str | None = None) -> str:
    """One table cell: `–` for None or NaN; a number through `spec` where given, else a float
    with 4 significant digits (from 10,000 up: whole, thousands separated); text on one line
    with `|` escaped (either would end the cell or the row)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if spec is not None:
        return format(value, spec)
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return " ".join(str(value).split()).replace("|", "\\|")


def markdown(table: pd.DataFrame, specs: dict[str, str] | None = None) -> str:
    """`table` as a GitHub Markdown table, each value through `cell` (with `specs[column]`);
    the formatted text is not parsed as numbers again."""
    specs = specs or {}
    shown = pd.DataFrame({col: [cell(v, specs.get(col)) for v in table[col]] for col in table.columns})
    return shown.to_markdown(index=False, tablefmt="github", disable_numparse=True)


def write(out: Path, name: str, *parts: str | pd.DataFrame, data: pd.DataFrame | None = None) -> str:
    """Writes OUT/NAME.md: `parts` in order, a blank line between them (text as it is, a
    DataFrame as a table through `markdown`), and OUT/NAME.csv from `data` where given.
    Returns the Markdown."""
    text = "\n\n".join(p if isinstance(p, str) else markdown(p) for p in parts) + "\n"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(text)
    if data is not None:
        data.to_csv(out / f"{name}.csv", index=False)
    return text


def fresh_process_row(module: str, *args: str) -> dict:
    """`python -m MODULE ARGS` in a fresh process (its first calls pay what a cell's process
    pays); the JSON object on its last line of output, printed as it comes. A child that fails
    stops the benchmark, naming its arguments."""
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          env=os.environ)
    if proc.returncode:
        raise SystemExit(f"{module} {' '.join(args)}: exit {proc.returncode}: "
                         f"{proc.stderr[-2000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(row), flush=True)
    return row
