"""`sweep GRID --reuse OTHER`: the cells another sweep completed with the same configuration
are copied in, not trained again; `--extend` and `resume` leave them alone afterwards."""
import json

from tests.test_order import TINY
from tests.test_resume_where import launcher, states


def tiny_grid(tmp_path, name: str, seeds: list[int], **resources):
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps({"name": name, "fixed": TINY, "resources": {"gpus": 0, **resources},
                                "grid": {"model": ["pop", "gru4rec"], "seed": seeds}}))
    return path


def test_reuse_copies_completed_cells_of_the_same_configuration(tmp_path):
    first = tmp_path / "first"
    ran = launcher("sweep", tiny_grid(tmp_path, "first", [1]), "--executor", "local",
                   "--workers", "1", "--out", first)
    assert ran.returncode == 0, ran.stderr[-2000:]

    bad = launcher("sweep", tiny_grid(tmp_path, "second", [1, 2]), "--executor", "local",
                   "--out", tmp_path / "second", "--reuse", tmp_path / "nothing")
    assert bad.returncode == 2 and "--reuse" in bad.stderr and "nothing" in bad.stderr
    assert not (tmp_path / "second").exists()

    some_cell = next((first / "cells").glob("*/cell.json"))   # run before the trainer had a
    older = json.loads(some_cell.read_text())                 # field: it counts at its default
    del older["config"]["profile_steps"]
    some_cell.write_text(json.dumps(older))
    # another grid (another W&B group) asking for other resources (so other cell ids): its
    # seed-1 cells are the same runs
    second = tmp_path / "second"
    ran = launcher("sweep", tiny_grid(tmp_path, "second", [1, 2], mem="3G"), "--executor",
                   "local", "--workers", "1", "--out", second, "--reuse", first)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert f"--reuse: 2 completed cell(s) copied from {first}" in ran.stdout
    assert ran.stdout.count(": exit 0") == 2                 # only seed 2's cells trained
    assert set(states(second).values()) == {"COMPLETED"} and len(states(second)) == 4
    ids = {sweep: {c["name"]: c["id"] for c in
                   json.loads((sweep / "manifest.json").read_text())["cells"]}
           for sweep in (first, second)}
    for name, their_id in ids[first].items():
        mine, theirs = second / "cells" / ids[second][name], first / "cells" / their_id
        assert mine != theirs
        assert (mine / "result.json").read_text() == (theirs / "result.json").read_text()
        assert json.loads((mine / "reused.json").read_text())["from"] == str(theirs.resolve())
        assert not (mine / "checkpoint.pt").exists()

    again = launcher("sweep", tiny_grid(tmp_path, "second", [1, 2], mem="3G"), "--executor",
                     "local", "--workers", "1", "--out", second, "--extend")
    assert again.returncode == 0 and "has all 4 cell(s) already" in again.stdout
    resumed = launcher("resume", second, "--executor", "local")
    assert resumed.returncode == 0 and "nothing to resume" in resumed.stdout


def test_reuse_refuses_a_cell_whose_configuration_differs(tmp_path):
    first = tmp_path / "first"
    ran = launcher("sweep", tiny_grid(tmp_path, "first", [1]), "--executor", "local",
                   "--workers", "1", "--out", first, "--where", "model=pop")
    assert ran.returncode == 0, ran.stderr[-2000:]
    (cell,) = json.loads((first / "manifest.json").read_text())["cells"]
    cell_json = first / "cells" / cell["id"] / "cell.json"
    doctored = json.loads(cell_json.read_text())
    doctored["config"]["max_len"] = 99         # e.g. a default of the trainer that changed
    cell_json.write_text(json.dumps(doctored))
    ran = launcher("sweep", tiny_grid(tmp_path, "second", [1]), "--executor", "local",
                   "--workers", "1", "--out", tmp_path / "second", "--where", "model=pop",
                   "--reuse", first)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "not reused from" in ran.stdout and "differs: max_len" in ran.stdout
    assert ran.stdout.count(": exit 0") == 1
