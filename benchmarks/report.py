"""The one writer of the benchmarks' tables: OUT/NAME.md (text and GitHub Markdown tables, through
`DataFrame.to_markdown`, i.e. tabulate) and, where a benchmark has one, OUT/NAME.csv (its data,
every column unformatted)."""
from __future__ import annotations

import math
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
