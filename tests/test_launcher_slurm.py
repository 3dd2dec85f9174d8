"""The launcher against the real SLURM cluster (slurm/dev-cluster): arrays, failures, cancel,
kill -9, preemption, concurrent resumes, the local executor, shell safety and secrets."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

TINY = {"dataset": "synthetic", "synthetic": {"n_users": 80, "n_items": 40,
                                             "n_interactions": 1600, "seed": 3},
        "max_len": 8, "embedding_dim": 8, "num_heads": 2, "num_blocks": 1, "batch_size": 64,
        "lr": 0.005, "patience": 5, "wandb_mode": "disabled", "device": "cpu"}
RESOURCES = {"cpus": 1, "mem": "2G", "time": "00:10:00"}


def write_grid(path: Path, name: str, grid: dict, fixed: dict | None = None, **extra) -> Path:
    body = {"name": name, "fixed": {**TINY, **(fixed or {})}, "grid": grid,
            "resources": RESOURCES, **extra}
    path.write_text(json.dumps(body))           # JSON is YAML
    return path


def launcher(*args, env=None, check=True):
    proc = subprocess.run([sys.executable, "-m", "launcher", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"launcher {args} exit {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def states(sweep: Path) -> dict[str, dict]:
    return {r["name"]: r for r in json.loads(launcher("status", sweep, "--json").stdout)}


def wait_for(sweep: Path, done, timeout=240, every=2.0) -> dict[str, dict]:
    deadline = time.time() + timeout
    while True:
        rows = states(sweep)
        if done(rows):
            return rows
        if time.time() > deadline:
            raise AssertionError(f"timed out; states: { {k: v['state'] for k, v in rows.items()} }")
        time.sleep(every)


def all_final(rows):
    return all(r["state"] not in ("PENDING", "RUNNING") for r in rows.values())


def submissions(sweep: Path) -> list[dict]:
    return [json.loads(x) for x in (sweep / "submissions.jsonl").read_text().splitlines()]


def cell_dir(sweep: Path, rows, name) -> Path:
    return sweep / "cells" / rows[name]["id"]


def test_sweep_runs_as_arrays_failures_recorded_and_local_gives_same_results(slurm_cluster, tmp_path):
    grid = write_grid(tmp_path / "g.yaml", "six", {"model": ["pop", "sasrec"],
                                                   "seed": [1, 2, 3]},
                      fixed={"epochs": 2},
                      overrides=[{"when": {"model": "sasrec", "seed": 3},
                                  "set": {"inject_fault": "raise@1"}}])
    sweep = tmp_path / "sweep"
    out = launcher("sweep", grid, "--executor", "slurm", "--out", sweep)
    assert "submitted 6 cells as 1 array job(s)" in out.stdout
    jobs = {s["job_id"].split("_")[0] for s in submissions(sweep)}
    assert len(jobs) == 1                                   # one sbatch for the whole array
    rows = wait_for(sweep, all_final)
    failed = rows.pop("sasrec-synthetic-L8-s3")
    assert failed["state"] == "FAILED" and "injected failure in epoch 1" in failed["reason"]
    assert {r["state"] for r in rows.values()} == {"COMPLETED"}
    for name in rows:
        assert json.loads((cell_dir(sweep, rows, name) / "result.json").read_text())["status"] \
            == "COMPLETED"

    # The local executor runs the same grid to the same results (two of its cells suffice).
    local_grid = write_grid(tmp_path / "l.yaml", "six", {"model": ["pop", "sasrec"], "seed": [1]},
                            fixed={"epochs": 2})
    local = tmp_path / "local"
    launcher("sweep", local_grid, "--executor", "local", "--out", local, "--workers", "2")
    local_rows = states(local)
    for name in ("pop-synthetic-L8-s1", "sasrec-synthetic-L8-s1"):
        assert local_rows[name]["id"] == rows[name]["id"]          # same cell, same id
        a = json.loads((cell_dir(sweep, rows, name) / "result.json").read_text())
        b = json.loads((cell_dir(local, local_rows, name) / "result.json").read_text())
        assert {k: v for k, v in a.items() if k.startswith("test_")} == \
            {k: v for k, v in b.items() if k.startswith("test_")}


def test_scancel_then_resume_reruns_only_that_cell(slurm_cluster, tmp_path):
    grid = write_grid(tmp_path / "g.yaml", "cancel", {"model": ["pop", "sasrec"], "seed": [1]},
                      fixed={"epochs": 2, "epoch_sleep_s": 4.0})   # sasrec: slow enough to catch
    sweep = tmp_path / "sweep"
    launcher("sweep", grid, "--executor", "slurm", "--out", sweep)
    rows = states(sweep)
    victim = rows["sasrec-synthetic-L8-s1"]
    launcher("cancel", sweep, "--cells", victim["id"])
    rows = wait_for(sweep, all_final)
    assert rows["sasrec-synthetic-L8-s1"]["state"] == "CANCELLED"
    assert rows["pop-synthetic-L8-s1"]["state"] == "COMPLETED"
    before = len(submissions(sweep))
    out = launcher("resume", sweep)
    assert f"resuming 1 cell(s): {victim['id']} (CANCELLED)" in out.stdout
    assert len(submissions(sweep)) == before + 1
    rows = wait_for(sweep, all_final)
    assert {r["state"] for r in rows.values()} == {"COMPLETED"}
    assert "nothing to resume" in launcher("resume", sweep).stdout     # idempotent


def _wait_file(path: Path, timeout=180):
    deadline = time.time() + timeout
    while not path.exists():
        if time.time() > deadline:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.5)


def test_kill_9_then_resume_continues_from_checkpoint_with_identical_metrics(slurm_cluster,
                                                                            tmp_path):
    fixed = {"epochs": 4, "epoch_sleep_s": 3.0}
    grid = write_grid(tmp_path / "g.yaml", "kill", {"model": ["sasrec"], "seed": [1]}, fixed=fixed)
    sweep = tmp_path / "sweep"
    launcher("sweep", grid, "--executor", "slurm", "--out", sweep)
    cdir = cell_dir(sweep, states(sweep), "sasrec-synthetic-L8-s1")
    _wait_file(cdir / "checkpoint.pt")
    pid = json.loads((cdir / "running.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    rows = wait_for(sweep, all_final)
    assert rows["sasrec-synthetic-L8-s1"]["state"] == "FAILED"
    launcher("resume", sweep)
    rows = wait_for(sweep, all_final)
    assert rows["sasrec-synthetic-L8-s1"]["state"] == "COMPLETED"
    resumed = json.loads((cdir / "result.json").read_text())
    assert resumed["resumed_from_epoch"] >= 1

    from recsys_core.train import TrainConfig, run
    fixed.pop("epoch_sleep_s")     # a debug hook, not configuration
    reference = run(TrainConfig(**{**TINY, **fixed, "model": "sasrec", "seed": 1,
                                   "out": str(tmp_path / "ref")}))
    for k, v in reference.items():
        if k.startswith(("val_", "test_")):
            assert resumed[k] == v, k


def test_preemption_signal_checkpoints_requeues_and_completes(slurm_cluster, tmp_path):
    grid = write_grid(tmp_path / "g.yaml", "preempt", {"model": ["sasrec"], "seed": [1]},
                      fixed={"epochs": 3, "epoch_sleep_s": 3.0})
    sweep = tmp_path / "sweep"
    launcher("sweep", grid, "--executor", "slurm", "--out", sweep)
    rows = states(sweep)
    cdir = cell_dir(sweep, rows, "sasrec-synthetic-L8-s1")
    _wait_file(cdir / "checkpoint.pt")
    job = rows["sasrec-synthetic-L8-s1"]["job_id"]
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    rows = wait_for(sweep, all_final, timeout=300)
    assert rows["sasrec-synthetic-L8-s1"]["state"] == "COMPLETED"
    assert json.loads((cdir / "requeues.json").read_text())["count"] == 1
    assert json.loads((cdir / "result.json").read_text())["resumed_from_epoch"] >= 1
    assert len(submissions(sweep)) == 1                     # requeued by SLURM, not resubmitted


def test_packs_run_several_cells_per_job_with_per_cell_states_and_metrics(slurm_cluster,
                                                                         tmp_path):
    """4 cells, 3 per job: 2 jobs. The failing second cell of the first pack is FAILED, the
    cell after it completes with exactly the metrics of its own process; status shows cells."""
    grid = write_grid(tmp_path / "g.yaml", "packs", {"model": ["sasrec", "gru4rec"],
                                                     "seed": [1, 2]}, fixed={"epochs": 2},
                      overrides=[{"when": {"model": "sasrec", "seed": 2},
                                  "set": {"inject_fault": "raise@1"}}])
    sweep = tmp_path / "sweep"
    out = launcher("sweep", grid, "--executor", "slurm", "--out", sweep, "--cells-per-job", "3")
    assert "submitted 4 cells in 2 jobs as 1 array job(s)" in out.stdout
    subs = submissions(sweep)
    assert len(subs) == 4 and len({s["job_id"] for s in subs}) == 2
    rows = wait_for(sweep, all_final)
    assert {n: r["state"] for n, r in rows.items()} == {
        "sasrec-synthetic-L8-s1": "COMPLETED", "sasrec-synthetic-L8-s2": "FAILED",
        "gru4rec-synthetic-L8-s1": "COMPLETED", "gru4rec-synthetic-L8-s2": "COMPLETED"}
    assert "injected failure in epoch 1" in rows["sasrec-synthetic-L8-s2"]["reason"]
    after = json.loads((cell_dir(sweep, rows, "gru4rec-synthetic-L8-s1") / "result.json").read_text())
    assert after["runner"] == "pack" and after["runner_cells_before"] == 2
    assert isinstance(after["time_queue_s"], float) and after["time_queue_s"] >= 0
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "cell.json").write_text((cell_dir(sweep, rows, "gru4rec-synthetic-L8-s1")
                                      / "cell.json").read_text())
    proc = subprocess.run([sys.executable, "-m", "jobs.train_cell", str(alone)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    own = json.loads((alone / "result.json").read_text())
    assert own["runner"] == "process-per-cell"
    metrics = [k for k in own if k.startswith(("val_", "test_", "cold_"))]
    assert metrics and {k: own[k] for k in metrics} == {k: after[k] for k in metrics}


def test_preempted_pack_requeues_only_its_unfinished_cells(slurm_cluster, tmp_path):
    grid = write_grid(tmp_path / "g.yaml", "packpre", {"model": ["pop", "sasrec"], "seed": [1]},
                      fixed={"epochs": 3, "epoch_sleep_s": 3.0})
    body = json.loads(grid.read_text())
    body["resources"]["cells_per_job"] = 2
    grid.write_text(json.dumps(body))
    sweep = tmp_path / "sweep"
    launcher("sweep", grid, "--executor", "slurm", "--out", sweep)
    rows = states(sweep)
    pop, slow = (cell_dir(sweep, rows, n) for n in ("pop-synthetic-L8-s1", "sasrec-synthetic-L8-s1"))
    _wait_file(slow / "checkpoint.pt")
    pop_written = (pop / "result.json").stat().st_mtime_ns     # pop ran first: finished
    assert states(sweep)["pop-synthetic-L8-s1"]["state"] == "COMPLETED"   # its pack runs on
    # RUNNING once sacct has the job running too (its accounting can lag a loaded machine)
    wait_for(sweep, lambda r: r["sasrec-synthetic-L8-s1"]["state"] == "RUNNING",
             timeout=5, every=0.5)
    subprocess.run(["scancel", "--signal=USR2", rows["pop-synthetic-L8-s1"]["job_id"]], check=True)
    rows = wait_for(sweep, all_final, timeout=300)
    assert {r["state"] for r in rows.values()} == {"COMPLETED"}
    assert json.loads((slow / "requeues.json").read_text())["count"] == 1
    assert json.loads((slow / "result.json").read_text())["resumed_from_epoch"] >= 1
    assert not (pop / "requeues.json").exists()               # not in the requeued pack
    assert (pop / "result.json").stat().st_mtime_ns == pop_written
    assert len(submissions(sweep)) == 2                        # requeued by SLURM, not resubmitted


def test_cancel_one_cell_of_a_pack_lets_the_others_run_and_resume_reruns_it(slurm_cluster,
                                                                            tmp_path):
    grid = write_grid(tmp_path / "g.yaml", "packcancel", {"model": ["sasrec"], "seed": [1, 2]},
                      fixed={"epochs": 2, "epoch_sleep_s": 3.0})
    sweep = tmp_path / "sweep"
    launcher("sweep", grid, "--executor", "slurm", "--out", sweep, "--cells-per-job", "2")
    rows = states(sweep)
    first, second = "sasrec-synthetic-L8-s1", "sasrec-synthetic-L8-s2"
    _wait_file(cell_dir(sweep, rows, first) / "running.json")
    assert states(sweep)[second]["state"] == "PENDING"       # queued behind it in its pack
    out = launcher("cancel", sweep, "--cells", rows[first]["id"])
    assert "cancelled 1 SLURM job(s)" in out.stdout
    rows = wait_for(sweep, all_final)
    assert rows[first]["state"] == "CANCELLED" and rows[second]["state"] == "COMPLETED"
    assert not (cell_dir(sweep, rows, first) / "result.json").exists()
    out = launcher("resume", sweep)
    assert f"resuming 1 cell(s): {rows[first]['id']} (CANCELLED)" in out.stdout
    rows = wait_for(sweep, all_final)
    assert {r["state"] for r in rows.values()} == {"COMPLETED"}


def test_two_resumes_at_once_never_submit_a_cell_twice(slurm_cluster, tmp_path):
    grid = write_grid(tmp_path / "g.yaml", "race", {"model": ["pop"], "seed": [1, 2, 3]})
    sweep = tmp_path / "sweep"
    launcher("sweep", grid, "--executor", "dry-run", "--out", sweep)
    assert not (sweep / "submissions.jsonl").exists()       # dry-run submitted nothing
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        launcher("resume", sweep, "--executor", "slurm"))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = {}
    for s in submissions(sweep):
        counts[s["cell"]] = counts.get(s["cell"], 0) + 1
    assert sorted(counts.values()) == [1, 1, 1]
    assert sum("nothing to resume" in r.stdout for r in results) == 1
    launcher("cancel", sweep)


def test_shell_metacharacters_stay_literal_and_secrets_stay_out(slurm_cluster, tmp_path):
    evil = "x; rm -rf ~ $(touch PWNED) `id`"
    grid = write_grid(tmp_path / "g.yaml", "safe", {"model": ["pop"], "seed": [1]},
                      fixed={"wandb_project": evil, "wandb_mode": "offline"})
    sweep = tmp_path / "sweep"
    secret = "planted-secret-key-" + "7" * 20
    env = {**os.environ, "WANDB_API_KEY": secret}
    launcher("sweep", grid, "--executor", "dry-run", "--out", tmp_path / "dry", env=env)
    for script in (tmp_path / "dry" / "sbatch").iterdir():
        assert evil not in script.read_text()
    launcher("sweep", grid, "--executor", "slurm", "--out", sweep, env=env)
    rows = wait_for(sweep, all_final)
    result = json.loads((cell_dir(sweep, rows, "pop-synthetic-L8-s1") / "result.json").read_text())
    assert result["status"] == "COMPLETED" and result["wandb_project"] == evil
    assert not list(tmp_path.rglob("PWNED")) and not (REPO / "PWNED").exists()
    for path in [*sweep.rglob("*"), *(tmp_path / "dry").rglob("*")]:
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_control_characters_in_resources_are_refused_before_submitting(slurm_cluster, tmp_path):
    grid = write_grid(tmp_path / "g.yaml", "inject", {"model": ["pop"], "seed": [1]})
    body = json.loads(grid.read_text())
    body["resources"]["partition"] = "debug\nrm -rf /tmp/x"
    grid.write_text(json.dumps(body))
    proc = launcher("sweep", grid, "--executor", "slurm", "--out", tmp_path / "s", check=False)
    assert proc.returncode == 2 and "partition" in proc.stderr
    assert not (tmp_path / "s" / "submissions.jsonl").exists()


def test_sbatch_refusal_is_one_line_for_sweep_and_resume(slurm_cluster, tmp_path):
    grid = write_grid(tmp_path / "g.yaml", "nopart", {"model": ["pop"], "seed": [1, 2]})
    body = json.loads(grid.read_text())
    body["resources"]["partition"] = "no-such-partition"
    grid.write_text(json.dumps(body))
    for args in (("sweep", grid, "--executor", "slurm", "--out", tmp_path / "s"),
                 ("sweep", grid, "--executor", "dry-run", "--out", tmp_path / "d"),
                 ("resume", tmp_path / "d", "--executor", "slurm")):
        proc = launcher(*args, check=False)
        if "dry-run" in args:
            assert proc.returncode == 0
            continue
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        line = proc.stderr.strip().splitlines()[-1]
        assert proc.stderr.strip().splitlines() == [line]
        assert "invalid partition" in line.lower() and "partition=no-such-partition" in line
        assert "2 cell(s)" in line
    assert not (tmp_path / "s").exists()             # refused before anything ran: nothing left
    assert not (tmp_path / "d" / "submissions.jsonl").exists()


def test_a_job_slurm_will_never_start_says_so_in_status(slurm_cluster, tmp_path):
    """More CPUs than any node has: sbatch takes the job and SLURM keeps it pending forever
    (PartitionConfig); status says so under the cell, a PENDING cell with an ordinary wait
    says nothing more, and cancel ends it."""
    grid = write_grid(tmp_path / "g.yaml", "toobig", {"model": ["pop"]})
    body = json.loads(grid.read_text())
    body["resources"]["cpus"] = 4096
    grid.write_text(json.dumps(body))
    sweep = tmp_path / "s"
    launcher("sweep", grid, "--executor", "slurm", "--out", sweep)
    rows = wait_for(sweep, lambda r: all(x["reason"] for x in r.values()), timeout=60, every=1)
    (row,) = rows.values()
    assert row["state"] == "PENDING" and row["reason"].startswith("will not start: SLURM holds ")
    assert "PartitionConfig" in row["reason"] and "grid's resources" in row["reason"]
    table = launcher("status", sweep).stdout
    assert "    will not start: SLURM holds job" in table
    launcher("cancel", sweep)
    assert wait_for(sweep, all_final, timeout=60)[row["name"]]["state"] == "CANCELLED"


MULTINODE = "multinode"    # slurm/dev-cluster's partition of all its nodes (up --nodes 2)


def _per_node_command(template: str, sweep: Path, cell_id: str, node_rank: int,
                      first_host: str) -> re.Pattern:
    """The dry-run script's `accelerate launch` line as one node's task must run it: that
    node's rank, the allocation's first host, node 0's port (any number), this sweep's cell."""
    pattern = re.escape(template)
    for placeholder, value in (("$SLURM_NODEID", str(node_rank)),
                               ("<first host of $SLURM_JOB_NODELIST>", first_host),
                               ("SWEEP/cells/<id>", f"{sweep}/cells/{cell_id}")):
        pattern = pattern.replace(re.escape(placeholder), re.escape(value))
    return re.compile(pattern.replace(re.escape("<free port of node 0>"), r"(\d+)"))


def test_two_node_cell_runs_accelerate_per_node_and_matches_one_node(slurm_cluster, tmp_path):
    """A 2-node x 1-process CPU cell through sbatch and srun: each node's task runs the
    `accelerate launch --machine_rank $SLURM_NODEID` the dry-run script shows, the two meet at
    node 0's address and port, and the metrics equal the same cell as 2 processes on 1 node."""
    sizes = subprocess.run(["sinfo", "-h", "-p", MULTINODE, "-o", "%D"], capture_output=True,
                           text=True).stdout.split()
    if sum(map(int, sizes)) < 2:
        pytest.fail(f"the cluster at SLURM_CONF={os.environ.get('SLURM_CONF')} has no partition "
                    f"'{MULTINODE}' of 2 nodes: start it with `slurm/dev-cluster up --nodes 2`",
                    pytrace=False)
    cell = {"model": ["sasrec"], "seed": [1]}
    fixed = {"epochs": 2, "num_processes": 2}
    two = write_grid(tmp_path / "two.yaml", "two-nodes", cell, fixed=fixed, resources={
        **RESOURCES, "nodes": 2, "gpus": 0, "partition": MULTINODE})
    one = write_grid(tmp_path / "one.yaml", "one-node", cell, fixed=fixed)
    launcher("sweep", two, "--executor", "slurm", "--out", tmp_path / "two")
    launcher("sweep", one, "--executor", "slurm", "--out", tmp_path / "one")
    launcher("sweep", two, "--executor", "dry-run", "--out", tmp_path / "dry")
    name = "sasrec-synthetic-L8-s1"
    rows = {s: wait_for(tmp_path / s, all_final)[name] for s in ("two", "one")}
    results = {s: json.loads((tmp_path / s / "cells" / rows[s]["id"] / "result.json").read_text())
               for s in rows}
    for s in rows:
        assert rows[s]["state"] == "COMPLETED", rows[s]
        assert results[s]["num_processes"] == 2

    job = rows["two"]["job_id"]
    nnodes, nodelist = subprocess.run(["sacct", "-j", job, "-X", "-n", "-P", "-o",
                                       "NNodes,NodeList"], capture_output=True, text=True,
                                      check=True).stdout.split()[0].split("|")
    hosts = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                           text=True, check=True).stdout.split()
    assert nnodes == "2" and len(set(hosts)) == 2
    script = (tmp_path / "dry" / "sbatch" / "array000.sh").read_text()
    assert "#SBATCH --nodes=2" in script and "#SBATCH --ntasks-per-node=1" in script
    template = script.split("# each node's task runs: ", 1)[1].split("\n", 1)[0]
    ports = set()
    for rank in (0, 1):    # task `rank` runs on the allocation's node `rank`
        log = (tmp_path / "two" / "slurm" / job / f"{job}_{rank}_log.err").read_text()
        ran = [line.removeprefix("running: ") for line in log.splitlines()
               if line.startswith("running: ")]
        expected = _per_node_command(template, tmp_path / "two", rows["two"]["id"], rank, hosts[0])
        assert len(ran) == 1 and (match := expected.fullmatch(ran[0])), (ran, expected.pattern)
        ports.add(match.group(1))
    assert len(ports) == 1                                   # both met at node 0's port

    metrics = {s: {k: v for k, v in r.items() if k.startswith(("val_", "test_"))}
               for s, r in results.items()}
    assert metrics["two"] and metrics["two"] == metrics["one"]
    import pandas as pd
    losses = {s: pd.read_parquet(tmp_path / s / "cells" / rows[s]["id"] / "history.parquet")
              ["train_loss"].tolist() for s in rows}
    assert len(losses["two"]) == 2 and losses["two"] == losses["one"]


def test_without_slurm_the_slurm_tests_fail_with_one_line_never_skip(tmp_path):
    """No SLURM_CONF, no slurmctld and no apt-get on the PATH: a SLURM test errors with one
    line that says why; it is not skipped."""
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    env["PATH"] = os.path.dirname(sys.executable)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp",
         str(tmp_path / "t"),
         "tests/test_launcher_slurm.py::test_control_characters_in_resources_are_refused_before_submitting"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "1 error" in proc.stdout and "skipped" not in proc.stdout
    reason = [line for line in proc.stdout.splitlines() if "SLURM is not installed" in line]
    assert reason and "no apt-get" in reason[0], proc.stdout[-2000:]


def test_dev_cluster_down_leaves_no_defunct_daemon_and_up_again(slurm_cluster):
    """Runs last among the SLURM tests: stops the cluster they used, then starts it again."""
    state_dir = Path(slurm_cluster).parents[1]
    tool = str(REPO / "slurm" / "dev-cluster")
    down = subprocess.run([tool, "down", "--dir", str(state_dir)], capture_output=True, text=True,
                          timeout=120)
    assert down.returncode == 0, down.stderr
    daemons = {"munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd", "slurmscriptd"}
    defunct = subprocess.run(["ps", "-eo", "pid=,stat=,comm="], capture_output=True,
                             text=True).stdout.splitlines()
    assert [p for p in defunct if p.split()[1].startswith("Z") and p.split()[2] in daemons] == []
    up = subprocess.run([tool, "up", "--dir", str(state_dir)], capture_output=True, text=True,
                        timeout=180)
    assert up.returncode == 0, up.stderr
    assert subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0
