"""The per-run tables of geometry and longtail analyses done in slices (each device call
analyses the runs it trained, into its own folder) brought together into one set of tables.

Under each folder given, every geometry.csv and longtail.csv (the per-run tables; the top-N
tables beside them are not combined) is read. Rows are concatenated per kind; a run
found in more than one table keeps the row of the most recently modified one (a later folder
on the command line wins a tie), so analysing a run again replaces it. Writes, for each kind
found, KIND.{csv,md} (every run, sorted by dataset, model, seed; `source` names the table a
row came from) and KIND_by_model.{csv,md}: per dataset and model the mean and sample std
over seeds of the measures that compare models, and n_seeds.

The geometry_pairs.csv tables (linear CKA and k-NN overlap of two runs' item embeddings, every
pair of runs one analysis had) are combined the same way, a pair of runs once (the newest
table's row), into geometry_pairs.{csv,md} and geometry_pairs_by_model.{csv,md}: per dataset
and pair of models the mean and std over the pairs of runs, apart for the pairs of one seed
(`same_seed`: two models started from the same item embeddings); a model with itself is its
runs of different seeds (how much of the space a seed decides).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from recsys_core.render import write_table

KEYS = ("run", "model", "dataset", "seed")
# the measures summarised per model; longtail's carry the cut-off K of the run
# (recall@10_tail, share_tail_in_top10) and are matched whatever K was
MEASURES = {
    "geometry": [r"dims_90", r"participation_ratio", r"anisotropy", r"hub_skewness",
                 r"hub_gini", r"mean_norm"],
    "longtail": [r"recall@\d+_(all|head|mid|tail)", r"ndcg@\d+_all", r"share_tail_in_top\d+",
                 r"coverage", r"gini_recommendations"],
}


class CombineError(ValueError):
    """An input folder or table that cannot be combined (the CLI's exit 2)."""


def tables_under(folder: Path, name: str, out: Path) -> list[Path]:
    """The files called `name` under folder, sorted; none under out, where a previous combine
    wrote its own."""
    skip = out.resolve()
    return [p for p in sorted(folder.rglob(name)) if skip not in p.resolve().parents]


def find_tables(dirs: list[Path], out: Path) -> dict[str, list[Path]]:
    """KIND → its per-run tables under dirs (in the order given; none under out)."""
    found: dict[str, list[Path]] = {kind: [] for kind in MEASURES}
    for d in dirs:
        if not d.is_dir():
            raise CombineError(f"{d}: no such folder")
        mine = [p for kind in MEASURES for p in tables_under(d, f"{kind}.csv", out)]
        if not mine:
            raise CombineError(f"{d}: no {' or '.join(f'{k}.csv' for k in MEASURES)} under it")
        for p in mine:
            found[p.stem].append(p)
    return found


def read_table(path: Path, keys: tuple[str, ...] = KEYS, kind: str = "per-run") -> pd.DataFrame:
    """One table with its key columns; an analysis of runs without item embeddings writes an
    empty file."""
    if not path.read_text().strip():
        return pd.DataFrame()
    try:
        table = pd.read_csv(path)
    except pd.errors.ParserError as e:
        raise CombineError(f"{path}: not a readable CSV table ({e})") from None
    for col in keys:
        if col not in table.columns:
            raise CombineError(f"{path}: no column '{col}' (a {kind} table has "
                               f"{', '.join(keys)} and its measures)")
    return table


def oldest_first(paths: list[Path], keys: tuple[str, ...] = KEYS, kind: str = "per-run"
                 ) -> list[pd.DataFrame]:
    """The non-empty tables, each with its `source`, the least recently modified first (a later
    path wins a tie), so that a row kept last for a run is the newest table's."""
    ordered = sorted(enumerate(paths), key=lambda ip: (ip[1].stat().st_mtime, ip[0]))
    return [t.assign(source=str(p)) for _, p in ordered if len(t := read_table(p, keys, kind))]


def concat(paths: list[Path]) -> tuple[pd.DataFrame, list[str]]:
    """All rows of the tables, one per run: the newest table's. Returns (rows, notes)."""
    frames = oldest_first(paths)
    if not frames:
        return pd.DataFrame(columns=[*KEYS, "source"]), []
    rows = pd.concat(frames, ignore_index=True)
    notes = []
    repeated = rows[rows.duplicated("run", keep=False)]
    for run, group in repeated.groupby("run", sort=True):
        older = ", ".join(group["source"].iloc[:-1])
        notes.append(f"{run}: kept the row of {group['source'].iloc[-1]} (newest), "
                     f"not of {older}")
    rows = rows.drop_duplicates("run", keep="last")
    rows = rows.sort_values(["dataset", "model", "seed"], kind="stable").reset_index(drop=True)
    return rows, notes


def measure_columns(kind: str, rows: pd.DataFrame) -> list[str]:
    """The columns of rows that MEASURES[kind] names, in the table's order."""
    patterns = [re.compile(p) for p in MEASURES[kind]]
    return [c for c in rows.columns if any(p.fullmatch(c) for p in patterns)]


def by_model(kind: str, rows: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Per dataset and model: n_seeds, then each measure's mean and sample std over the seeds.
    Returns (table, notes): a seed found twice in a group (two runs that differ in something
    other than model, dataset and seed, e.g. max_len) is noted, not hidden."""
    cols = measure_columns(kind, rows)
    g = rows.groupby(["dataset", "model"], sort=True)
    table = g.size().rename("n_seeds").to_frame()
    for c in cols:
        table[f"{c}_mean"] = g[c].mean()
        table[f"{c}_std"] = g[c].std(ddof=1)
    notes = [f"{kind} {ds} {model}: seed(s) {sorted(set(s[s.duplicated()]))} more than once "
             f"({len(s)} runs; they are averaged together)"
             for (ds, model), s in g["seed"] if s.duplicated().any()]
    return table.reset_index(), notes


PAIR_KEYS = ("run_a", "run_b", "model_a", "model_b")
PAIR_MEASURES = [r"linear_cka", r"knn_overlap@\d+"]


def combine_pairs(dirs: list[Path], out: Path, runs: pd.DataFrame
                  ) -> tuple[pd.DataFrame, list[str]]:
    """The geometry_pairs tables under dirs, one row per unordered pair of runs (the newest
    table's); `runs` (the combined geometry rows, indexed by run) gives each run's dataset and
    seed. Returns (per dataset, pair of models and same_seed: n_pairs, each measure's mean and
    std; notes). Two models trained with one seed start from the same item embeddings, which
    the sparse files' rarely updated items keep: such pairs are told apart (`same_seed`)."""
    paths = [p for d in dirs for p in tables_under(d, "geometry_pairs.csv", out)]
    frames = oldest_first(paths, PAIR_KEYS, "pairs")
    if not frames:
        return pd.DataFrame(), []
    rows = pd.concat(frames, ignore_index=True)
    first = rows[["run_a", "run_b"]].min(axis=1)       # the pair's runs in a fixed order,
    rows["pair"] = first + " | " + rows[["run_a", "run_b"]].max(axis=1)   # whichever came first
    rows = rows.drop_duplicates("pair", keep="last")
    rows["dataset"] = rows["run_a"].map(runs["dataset"])
    rows["same_seed"] = rows["run_a"].map(runs["seed"]) == rows["run_b"].map(runs["seed"])
    unknown = sorted(set(rows.loc[rows["dataset"].isna(), "run_a"]))
    rows = rows.dropna(subset=["dataset"])
    swap = rows["model_a"] > rows["model_b"]
    rows.loc[swap, ["model_a", "model_b"]] = rows.loc[swap, ["model_b", "model_a"]].values
    rows = rows.sort_values(["dataset", "model_a", "model_b", "pair"]).reset_index(drop=True)
    patterns = [re.compile(p) for p in PAIR_MEASURES]
    cols = [c for c in rows.columns if any(p.fullmatch(c) for p in patterns)]
    keys = ["dataset", "model_a", "model_b", "same_seed"]
    g = rows.groupby(keys, sort=True)
    table = g.size().rename("n_pairs").to_frame()
    for c in cols:
        table[f"{c}_mean"] = g[c].mean()
        table[f"{c}_std"] = g[c].std(ddof=1)
    shown = rows.drop(columns=["source", "pair"])
    write_table(out, "geometry_pairs", rows.drop(columns="pair"), shown=shown)
    table = table.reset_index()
    write_table(out, "geometry_pairs_by_model", table, shown=shown_by_model(
        table.rename(columns={"n_pairs": "n_seeds"}), (*keys, "n_seeds")
    ).rename(columns={"n_seeds": "n_pairs"}))
    notes = [f"geometry_pairs: {len(rows)} pairs of runs from {len(paths)} tables"]
    if unknown:
        notes.append(f"geometry_pairs: left out the pairs of {len(unknown)} run(s) that no "
                     f"geometry.csv has: {', '.join(unknown[:3])}")
    return table, notes


def mean_std(mean: float, std: float) -> str:
    """"mean ± std", both to the decimals that give the mean 4 significant digits."""
    if pd.isna(mean):
        return "n/a"
    whole = math.floor(math.log10(abs(mean))) + 1 if mean else 0     # digits before the point
    decimals = max(4 - whole, 0)
    return f"{mean:.{decimals}f}" + ("" if pd.isna(std) else f" ± {std:.{decimals}f}")


def shown_by_model(table: pd.DataFrame,
                   keys: tuple[str, ...] = ("dataset", "model", "n_seeds")) -> pd.DataFrame:
    out = table[list(keys)].astype(object)
    for col in table.columns:
        if col.endswith("_mean"):
            name = col[:-len("_mean")]
            out[name] = [mean_std(m, s) for m, s in zip(table[col], table[f"{name}_std"])]
    return out


def combine(dirs: list[str | Path], out: str | Path) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Writes the combined tables of every kind found under dirs into out. Returns (KIND →
    its by-model table, notes). A folder that is missing or holds no per-run table, or a
    table without a key column, raises CombineError naming it."""
    out = Path(out)
    found = find_tables([Path(d) for d in dirs], out)
    tables, notes = {}, []
    for kind, paths in found.items():
        if not paths:
            notes.append(f"no {kind}.csv under the folders: no {kind} tables written")
            continue
        rows, dup_notes = concat(paths)
        summary, seed_notes = by_model(kind, rows)
        write_table(out, kind, rows, shown=rows.drop(columns="source"))
        write_table(out, f"{kind}_by_model", summary, shown=shown_by_model(summary))
        counts = ", ".join(f"{ds} {n}" for ds, n in rows["dataset"].value_counts(sort=False)
                           .sort_index().items())
        notes += dup_notes + seed_notes
        notes.append(f"{kind}: {len(rows)} runs from {len(paths)} tables ({counts or 'none'})")
        tables[kind] = summary
        if kind == "geometry":
            pairs, pair_notes = combine_pairs([Path(d) for d in dirs], out,
                                              rows.set_index("run"))
            notes += pair_notes
    return tables, notes
