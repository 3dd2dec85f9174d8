"""The result record (recsys_core/train/results.py): one declaration of its fields, checked the
same way by the writer, the one-run reader and the many-cells reader; and the tables for
people (recsys_core/render.py)."""
import json

import pandas as pd
import pytest

from recsys_core.render import latex_table, markdown_table
from recsys_core.train.results import FIELDS, SCHEMA, read_result, read_results, write_result

GOOD = {"status": "COMPLETED", "reason": None, "test_recall@10": 0.5, "params_total": 1000,
        "val_recall@10_by_epoch": [0.1, None, 0.3], "model": "sasrec", "lr": 0.001}


def test_one_declaration():
    assert SCHEMA.names == list(FIELDS)
    assert {"status", "reason", "test_recall@10", "val_recall@10_by_epoch", "best_epoch",
            "epochs_run", "num_processes", "params_total", "wall_time_s"} <= set(FIELDS)


def test_write_then_read_one(tmp_path):
    flat = write_result(tmp_path, {**GOOD, "wall_time_s": float("nan"), "synthetic": {"a": 1}})
    assert flat["wall_time_s"] is None and flat["synthetic"] == '{"a": 1}'
    assert read_result(tmp_path) == flat
    assert read_result(tmp_path / "nothing") is None


@pytest.mark.parametrize("bad", [{"status": "RUNNING"},
                                 {"status": "COMPLETED", "test_recall@10": "0.5"},
                                 {"status": "FAILED", "reason": 3},
                                 {"status": "COMPLETED", "val_recall@10_by_epoch": [0.1, "x"]},
                                 {"status": "COMPLETED", "params_total": True}])
def test_a_record_of_wrong_types_is_neither_written_nor_read(tmp_path, bad):
    with pytest.raises(ValueError, match="not a result record"):
        write_result(tmp_path, bad)
    (tmp_path / "result.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=str(tmp_path / "result.json")):
        read_result(tmp_path)


def _cells(tmp_path, records: dict) -> list[str]:
    for cid, rec in records.items():
        (tmp_path / cid).mkdir()
        text = rec if isinstance(rec, str) else json.dumps(rec, indent=1)
        (tmp_path / cid / "result.json").write_text(text)
    return list(records) + ["absent"]


def test_many_at_once_the_same_checks(tmp_path):
    ids = _cells(tmp_path, {"a": GOOD, "b": {**GOOD, "test_recall@10": "high"},
                            "c": {"status": None}, "d": '{"status": "COMPLET', "e": "[1, 2]",
                            "f": {**GOOD, "status": "FAILED", "extra": {"k": 1}}})
    rows, problems = read_results(tmp_path, ids)
    assert sorted(rows["cell"]) == ["a", "f"]
    assert sorted(problems) == [str(tmp_path / c / "result.json") for c in "bcde"]
    assert "not a result record" in problems[str(tmp_path / "c" / "result.json")]
    assert set(FIELDS) <= set(rows.columns) and {"lr", "extra"} <= set(rows.columns)
    a = rows.set_index("cell").loc["a"]
    assert a["test_recall@10"] == 0.5 and list(a["val_recall@10_by_epoch"])[0] == 0.1
    assert pd.isna(a["best_epoch"])     # declared, absent from every file: null


def test_many_whose_other_fields_disagree_in_type(tmp_path):
    """A field outside the declaration, a number in one file and text in another: both files
    are read, that field as JSON text."""
    ids = _cells(tmp_path, {"a": {**GOOD, "note": 1}, "b": {**GOOD, "note": "one"}})
    rows, problems = read_results(tmp_path, ids)
    assert problems == {} and sorted(rows["note"]) == ["\"one\"", "1"]
    assert (rows["test_recall@10"] == 0.5).all()


def test_the_cache_reads_only_changed_files(tmp_path):
    ids = _cells(tmp_path, {"a": GOOD, "b": GOOD})
    cache = tmp_path / "cache"
    first, _ = read_results(tmp_path, ids, cache)
    (tmp_path / "b" / "result.json").write_text(json.dumps({**GOOD, "test_recall@10": 0.75,
                                                            "new_field": "x"}))
    again, _ = read_results(tmp_path, ids, cache)
    again = again.set_index("cell")
    assert again.loc["a", "test_recall@10"] == 0.5 and again.loc["b", "test_recall@10"] == 0.75
    assert again.loc["b", "new_field"] == "x" and pd.isna(again.loc["a", "new_field"])
    assert len(list(cache.iterdir())) == 1


def test_markdown_and_latex_of_one_frame():
    df = pd.DataFrame({"model": ["a|b", "c_d"], "Recall@10": ["**0.5000 ± 0.0100**", "n/a"],
                       "x": [0.123456, float("nan")]})
    md = markdown_table(df).splitlines()
    assert [c.strip() for c in md[0].strip("|").split(" | ")] == ["model", "Recall@10", "x"]
    assert set(md[1]) <= set("|-") and "a\\|b" in md[2] and "0.1235" in md[2]
    assert md[3].rstrip("| ").endswith("n/a")     # NaN: empty
    tex = latex_table(df, 1)
    assert "\\begin{tabular}{lrr}" in tex and "\\toprule" in tex and "\\bottomrule" in tex
    assert "\\textbf{0.5000 $\\pm$ 0.0100}" in tex and "c\\_d" in tex
    assert "\\begin{tabular}{lrr}" in latex_table(df.iloc[:0], 1)    # no rows, same columns
