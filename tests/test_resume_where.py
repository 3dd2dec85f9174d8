"""`resume SWEEP --where KEY=V`: only the unfinished cells with those values run; the others
stay as they were, and a key or value the unfinished cells do not have is exit 2."""
import json
import subprocess
import sys

from tests.conftest import REPO
from tests.test_order import grid


def launcher(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launcher", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def states(sweep) -> dict[str, str]:
    proc = launcher("status", sweep, "--json")
    assert proc.returncode == 0, proc.stderr
    return {r["name"].split("-")[0] + "-s" + r["name"].rsplit("-s", 1)[1]: r["state"]
            for r in json.loads(proc.stdout)}


def test_resume_where_runs_only_the_chosen_unfinished_cells(tmp_path):
    out = tmp_path / "sw"
    made = launcher("sweep", grid(tmp_path), "--executor", "dry-run", "--out", out)
    assert made.returncode == 0, made.stderr
    before = states(out)
    assert set(before.values()) == {"MISSING"} and len(before) == 8

    bad = launcher("resume", out, "--executor", "local", "--where", "model=xlstm")
    assert bad.returncode == 2 and "no cell of" in bad.stderr and "gru4rec" in bad.stderr
    bad = launcher("resume", out, "--executor", "local", "--where", "colour=red")
    assert bad.returncode == 2 and "no parameter 'colour'" in bad.stderr
    assert states(out) == before          # refused: nothing ran, nothing written

    # xlstm: a value the sweep lacks beside ones it has (a typo, or cells a later --extend
    # adds): said in a note, not dropped without a word
    ran = launcher("resume", out, "--executor", "local", "--workers", "1",
                   "--where", "model=pop,gru4rec,xlstm", "--where", "seed=2")
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "resuming 2 cell(s)" in ran.stdout
    assert f"note: --where 'model=pop,gru4rec,xlstm': no cell of {out} has model in ['xlstm']" \
        in ran.stdout
    after = states(out)
    assert {k for k, v in after.items() if v == "COMPLETED"} == {"pop-s2", "gru4rec-s2"}
    assert all(v == "MISSING" for k, v in after.items() if k not in ("pop-s2", "gru4rec-s2"))

    rest = launcher("resume", out, "--executor", "local", "--workers", "1")
    assert rest.returncode == 0 and "resuming 6 cell(s)" in rest.stdout
    assert set(states(out).values()) == {"COMPLETED"}
