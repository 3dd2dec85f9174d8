"""What the SLURM executor reads of its jobs: sacct's states, and slurmctld's (squeue) for the
jobs slurmdbd has not caught up with. `sacct` and `squeue` are fakes first on the PATH that
print outputs recorded on the dev cluster (slurm/dev-cluster, SLURM 22.05) and log their argv."""
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from launcher.executors.sacct import pending_reason, sacct_states

# Recorded a fraction of a second and 8 s after `sbatch -a 0-1 -c 4096` (job 5), `sbatch
# --begin=now+1hour` (6) and `sbatch --wrap 'sleep 5'` (7); job 4 had ended before.
SACCT_AT_SUBMIT = "4|COMPLETED|0:0|2026-12-06T18:16:52|2026-12-06T18:16:52|None\n"
SACCT_LATER = ("6|PENDING|0:0|Unknown|Unknown|BeginTime\n"
               "4|COMPLETED|0:0|2026-12-06T18:16:52|2026-12-06T18:16:52|None\n"
               "5_[0-1]|PENDING|0:0|Unknown|Unknown|PartitionConfig\n")
SQUEUE = "5_0|PENDING|PartitionConfig\n5_1|PENDING|PartitionConfig\n6|PENDING|BeginTime\n" \
         "7|RUNNING|None\n"
JOBS = ["4", "5_0", "5_1", "6", "7"]

FAKE = '''#!{python}
import json, sys
with open({log!r}, "a") as f:
    f.write(json.dumps([{name!r}, *sys.argv[1:]]) + "\\n")
sys.stdout.write({out!r})
sys.exit({rc})
'''


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """fake(sacct=..., squeue=..., squeue_rc=0) puts both commands on the PATH; returns the log."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.jsonl"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")

    def fake(sacct: str, squeue: str | None, squeue_rc: int = 0) -> Path:
        for name, out, rc in (("sacct", sacct, 0), ("squeue", squeue or "", squeue_rc)):
            path = bin_dir / name
            if name == "squeue" and squeue is None:
                path.unlink(missing_ok=True)     # a login node without squeue
                continue
            path.write_text(FAKE.format(python=sys.executable, log=str(log), name=name,
                                        out=out, rc=rc))
            path.chmod(path.stat().st_mode | stat.S_IEXEC)
        return log
    return fake


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_a_job_slurmdbd_has_not_recorded_yet_has_slurmctlds_state_and_reason(fake_slurm):
    log = fake_slurm(SACCT_AT_SUBMIT, SQUEUE)
    states = sacct_states(JOBS)
    assert {j: (s["state"], s["reason"]) for j, s in states.items()} == {
        "4": ("COMPLETED", "None"), "5_0": ("PENDING", "PartitionConfig"),
        "5_1": ("PENDING", "PartitionConfig"), "6": ("PENDING", "BeginTime"),
        "7": ("RUNNING", "None")}
    assert "will not start: SLURM holds job 5_0 (PartitionConfig" in \
        pending_reason("5_0", states["5_0"]["reason"])
    # One call each; squeue is asked only for the arrays sacct did not show ended.
    (sacct,), (squeue,) = ([c for c in calls(log) if c[0] == n] for n in ("sacct", "squeue"))
    assert sacct[-1] == "4,5,6,7" and squeue[1:] == ["-h", "-r", "-o", "%i|%T|%r", "-j", "5,6,7"]


def test_a_pending_jobs_reason_is_slurmctlds_where_slurmdbd_has_none_yet(fake_slurm):
    fake_slurm(SACCT_LATER.replace("PartitionConfig", ""), SQUEUE)
    assert sacct_states(["5_0", "5_1"])["5_1"]["reason"] == "PartitionConfig"


def test_without_squeue_sacct_says_what_it_knows(fake_slurm):
    for squeue, rc in ((None, 0), ("", 1)):       # no squeue on the PATH; squeue fails
        fake_slurm(SACCT_AT_SUBMIT, squeue, rc)
        assert set(sacct_states(JOBS)) == {"4"}
        fake_slurm(SACCT_LATER, squeue, rc)
        states = sacct_states(JOBS)
        assert set(states) == {"4", "5_0", "5_1", "6"} and states["5_1"]["reason"] == \
            "PartitionConfig"


def test_an_ended_job_slurmdbd_has_not_recorded_is_left_to_the_result_files(fake_slurm):
    """squeue may still hold a job that ended: sacct's record decides it, not squeue's."""
    fake_slurm("", "8|COMPLETED|None\n9|PENDING|Priority\n")
    assert sacct_states(["8", "9"]) == {
        "9": {"exit_code": "", "state": "PENDING", "raw": "PENDING", "reason": "Priority"}}
