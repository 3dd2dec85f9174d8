"""jobs/bench_call.sh, one device call of benchmarks, run here on the CPU: each command in turn
within the call's budget, and what they wrote back in three files."""
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from tests.conftest import REPO


def test_a_call_runs_its_commands_in_turn_and_brings_back_what_they_wrote(tmp_path):
    """A failing command does not stop the call; one past the budget is interrupted, and
    those after it are not run; results.tgz holds the files written during the call under
    BACK (not an older one, not a binary), logs.tgz each command's output."""
    res = tmp_path / "res"
    res.mkdir()
    (res / "old.md").write_text("before the call")
    time.sleep(1.1)                     # older than the call's start to the second
    out = tmp_path / "out"
    commands = [f"echo hello; printf '# table' > {res}/new.md; head -c 100 /dev/zero > {res}/x.bin;"
                f" echo $PYTHONPYCACHEPREFIX${{PYTHONDONTWRITEBYTECODE:-}} > {tmp_path}/pyc",
                "echo failing; exit 3", "sleep 30", "echo never"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "OUT": str(out), "BACK": str(res), "BUDGET": "8", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPYCACHEPREFIX", None)
    call = subprocess.run(["bash", "jobs/bench_call.sh", *commands], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert call.returncode == 0, call.stdout[-2000:] + call.stderr[-2000:]
    rows = [line.split("\t") for line in (out / "calls.tsv").read_text().splitlines()]
    assert rows[0] == ["n", "status", "seconds", "command"]
    assert [r[1] for r in rows[1:]] == ["0", "3", "124", "not run"]
    assert [r[3] for r in rows[1:]] == commands
    with tarfile.open(out / "results.tgz") as t:
        assert [Path(n).name for n in t.getnames()] == ["new.md"]
    with tarfile.open(out / "logs.tgz") as t:
        logs = {Path(m.name).name: t.extractfile(m).read().decode() for m in t.getmembers()
                if m.isfile()}
    assert logs == {"01.log": "hello\n", "02.log": "failing\n", "03.log": ""}
    assert "== 2: exit 3" in call.stdout
    # an image without bytecode: the commands share one bytecode folder, and write to it
    assert (tmp_path / "pyc").read_text() == "/tmp/bench-pycache\n"
