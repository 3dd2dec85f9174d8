"""Tables for people, one implementation for the launcher's aggregate and the analyses: a
frame → Markdown (a GitHub pipe table, pandas `to_markdown`) and LaTeX (a booktabs tabular),
both laid out by tabulate; the CSV beside them holds the numbers as they are. Light on
imports: the launcher uses it without the analyses' torch.

Cells are shown as the frame holds them (floats to `digits` significant digits, missing values
empty, line breaks as spaces); `**x**` in a cell is bold in both formats.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from tabulate import tabulate

_BOLD = re.compile(r"\*\*(.+?)\*\*")


def _texts(df: pd.DataFrame, digits: int) -> pd.DataFrame:
    """Every cell as its text, column by column: a 10,000-row table takes a fraction of a
    second."""
    out = {}
    for i, c in enumerate(df.columns):
        col = df.iloc[:, i]
        if pd.api.types.is_float_dtype(col):
            out[i] = ["" if v != v else f"{v:.{digits}g}" for v in col.tolist()]
        else:
            text = col.astype(object).where(col.notna(), "").astype(str)
            out[i] = text.str.replace("\n", " ", regex=False).tolist()
    return pd.DataFrame(out, index=range(len(df))).set_axis([str(c) for c in df.columns], axis=1)


def markdown_table(df: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub Markdown table of df as shown (`|` escaped)."""
    shown = _texts(df, digits).apply(lambda col: col.str.replace("|", "\\|", regex=False))
    shown.columns = [c.replace("|", "\\|") for c in shown.columns]
    return shown.to_markdown(index=False, tablefmt="github", disable_numparse=True) + "\n"


def latex_table(df: pd.DataFrame, n_left: int, digits: int = 4) -> str:
    """A booktabs tabular of df as shown: n_left left-aligned columns, then right-aligned;
    special characters escaped, `**x**` as \\textbf{x}, ± and − in their LaTeX forms."""
    align = ["left"] * n_left + ["right"] * (len(df.columns) - n_left)
    shown = _texts(df, digits)
    text = tabulate(shown.values.tolist(), headers=list(shown.columns), colalign=align,
                    tablefmt="latex_booktabs", disable_numparse=True)
    # tabulate leaves the column alignment out of a table without rows
    spec = "".join(a[0] for a in align)
    text = text.replace("\\begin{tabular}{}", f"\\begin{{tabular}}{{{spec}}}", 1)
    text = _BOLD.sub(r"\\textbf{\1}", text).replace("±", r"$\pm$").replace("−", "-")
    return "% needs \\usepackage{booktabs}\n" + text + "\n"


def write_table(out: Path, name: str, data: pd.DataFrame, shown: pd.DataFrame | None = None,
                n_left: int | None = None) -> str:
    """out/name.csv (data, numbers as they are), name.md (shown, default data) and, given
    n_left (the left-aligned columns), name.tex. Returns the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    shown = data if shown is None else shown
    data.to_csv(out / f"{name}.csv", index=False)
    md = markdown_table(shown)
    (out / f"{name}.md").write_text(md)
    if n_left is not None:
        (out / f"{name}.tex").write_text(latex_table(shown, n_left))
    return md
