"""`python -m launcher tune` against the real SLURM cluster (slurm/dev-cluster): each wave is
one job array, the tuner follows the jobs through sacct and the result files."""
from __future__ import annotations

import json

from launcher.grid import expand, load_grid
from tests.test_tune import launcher, report, submissions, write_tune_grid


def test_search_of_8_trials_runs_its_waves_as_job_arrays(slurm_cluster, tmp_path):
    grid = write_tune_grid(tmp_path / "g.yaml", fixed={"epochs": 2})
    out = tmp_path / "search"
    run = launcher("tune", grid, "--executor", "slurm", "--out", out,
                   "--emit-grid", tmp_path / "best.yaml")
    assert run.stdout.count("submitted 4 cells as 1 array job(s)") == 2
    rep = report(out)
    assert len(rep["trials"]) == 8 and {t["state"] for t in rep["trials"]} <= {"COMPLETE", "PRUNED"}
    assert all(t["value"] is not None for t in rep["trials"])
    assert set(submissions(out).values()) == {1} and len(submissions(out)) == 8
    jobs = [json.loads(line) for line in (out / "submissions.jsonl").read_text().splitlines()]
    assert {j["executor"] for j in jobs} == {"slurm"}
    assert len({j["job_id"].split("_")[0] for j in jobs}) == 2     # one array per wave
    assert len(expand(load_grid(tmp_path / "best.yaml"))) == 4      # 2 models x 2 final seeds
