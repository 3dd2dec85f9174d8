"""`--order` of the local executor: with one slot the cells run one after another, so the order
in which the launcher reports them finished is the order in which they started."""
import json
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

TINY = {"dataset": "synthetic", "synthetic": {"n_users": 60, "n_items": 30,
                                             "n_interactions": 900, "seed": 3},
        "max_len": 8, "embedding_dim": 8, "num_heads": 2, "num_blocks": 1, "batch_size": 32,
        "wandb_mode": "disabled", "device": "cpu", "epochs": 1}
GRID_ORDER = ["gru4rec", "pop", "sasrec", "bert4rec"]
# By the H200 prior on this tiny data the fixed costs decide: BERT4Rec's capture, then
# SASRec's, GRU4Rec's, and pop's counting last.
LONGEST_FIRST = ["bert4rec", "sasrec", "gru4rec", "pop"]


def grid(tmp_path: Path) -> Path:
    path = tmp_path / "g.yaml"
    path.write_text(json.dumps({"name": "order", "fixed": TINY, "resources": {"gpus": 0},
                                "grid": {"model": GRID_ORDER, "seed": [1, 2]}}))
    return path


def sweep(tmp_path: Path, *args) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "launcher", "sweep", grid(tmp_path),
                           "--executor", "local", "--workers", "1", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def models_run(stdout: str) -> list[str]:
    """The models of the cells in the order the launcher reported them done."""
    return [m.group(1) for m in re.finditer(r"^\w{12} (\w+)-synthetic-\S+: exit 0", stdout, re.M)]


def test_longest_first_is_the_default_and_grid_keeps_the_grid_order(tmp_path):
    out = sweep(tmp_path, "--where", "seed=1", "--out", tmp_path / "a").stdout
    assert models_run(out) == LONGEST_FIRST
    assert "order: longest-first (bert4rec first; expected cost: the H200 prior" in out
    subs = [json.loads(line) for line in (tmp_path / "a" / "submissions.jsonl").open()]
    assert {s["order"] for s in subs} == {"longest-first"}

    out = sweep(tmp_path, "--where", "seed=1", "--out", tmp_path / "b", "--order", "grid").stdout
    assert models_run(out) == GRID_ORDER and "order: grid" in out


def test_the_sweep_own_results_outweigh_the_prior(tmp_path):
    """Cells added to a sweep (--extend) are ordered by the wall times its finished cells of
    the same model and dataset recorded: here set to the reverse of the prior's order."""
    s = tmp_path / "s"
    sweep(tmp_path, "--where", "seed=1", "--out", s, "--order", "grid")
    walls = {"pop": 40.0, "gru4rec": 30.0, "sasrec": 20.0, "bert4rec": 10.0}
    for path in s.glob("cells/*/result.json"):
        result = json.loads(path.read_text())
        result.update(wall_time_s=walls[result["model"]], time_start_s=0.0)
        path.write_text(json.dumps(result))
    out = sweep(tmp_path, "--out", s, "--extend").stdout
    assert models_run(out) == ["pop", "gru4rec", "sasrec", "bert4rec"]
    assert "expected cost: 4 of 4 model/dataset pairs timed by this sweep's results" in out


def test_an_unknown_order_exits_2_naming_the_valid_ones(tmp_path):
    for command in (["sweep", grid(tmp_path), "--executor", "local", "--out", tmp_path / "x"],
                    ["resume", tmp_path / "x"]):
        proc = subprocess.run([sys.executable, "-m", "launcher", *map(str, command),
                               "--order", "shortest-first"], cwd=REPO, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2
        assert "'longest-first', 'grid'" in proc.stderr and "--order" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_costs_scale_with_length_and_data_and_ties_keep_the_grid_order(tmp_path):
    from launcher.executors.order import arrange, prior_s
    from launcher.grid import expand, load_grid
    from launcher.sweep import Sweep
    path = tmp_path / "g.yaml"
    fixed = {k: v for k, v in TINY.items() if k != "max_len"}
    path.write_text(json.dumps({"name": "ties", "fixed": fixed, "resources": {"gpus": 0},
                                "grid": {"model": ["gru4rec"],
                                         "max_len": [8, 16], "seed": [1, 2, 3]}}))
    cells = expand(load_grid(path))
    ranked, line = arrange(Sweep.create(tmp_path / "s", path, "ties", cells, "local"), cells,
                           "longest-first")
    assert [(c.params["max_len"], c.params["seed"]) for c in ranked] == \
        [(16, 1), (16, 2), (16, 3), (8, 1), (8, 2), (8, 3)]
    assert line.startswith("order: longest-first (gru4rec first")
    assert prior_s("sasrec", "ml-1m", 64, None) > prior_s("sasrec", "ml-100k", 64, None)
    middle = prior_s("a-new-model", "ml-100k", 64, None)
    assert prior_s("lstm", "ml-100k", 64, None) < middle < prior_s("xlstm", "ml-100k", 64, None)
