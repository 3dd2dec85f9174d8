"""What a user sees at the command line: every usage error is one line and exit 2 with nothing
written, help that lists the choices, a progress line per epoch, Ctrl-C of a local sweep
(states, the progress line, resume of exactly the unfinished cells), the same grid reordered
is the same sweep, and what a result records of the run."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

TINY = {"dataset": "synthetic", "synthetic": {"n_users": 80, "n_items": 40,
                                             "n_interactions": 1600, "seed": 3},
        "max_len": 8, "embedding_dim": 8, "num_heads": 2, "num_blocks": 1, "batch_size": 64,
        "wandb_mode": "disabled", "device": "cpu", "epochs": 2}


def cli(module, *args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, **kw)


def one_line_error(proc):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize("flag,value,listed", [("--model", "nope", "sasrec"),
                                               ("--dataset", "nope", "ml-100k")])
def test_unknown_model_or_dataset_is_one_line_before_any_work(tmp_path, flag, value, listed):
    out = tmp_path / "run"
    line = one_line_error(cli("recsys_core.train", flag, value, "--out", out))
    assert f"invalid choice: '{value}'" in line and listed in line
    assert not out.exists()


def test_cuda_without_a_gpu_is_one_line(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}      # no GPU visible, whatever the machine
    out = tmp_path / "run"
    line = one_line_error(cli("recsys_core.train", "--device", "cuda", "--out", out, env=env))
    assert "no CUDA device" in line and not out.exists()


def test_train_help_lists_models_and_datasets_and_hides_test_hooks():
    proc = cli("recsys_core.train", "--help")
    assert proc.returncode == 0
    for name in ("sasrec", "xlstm", "bert4rec", "gru4rec", "lstm", "pop", "ml-100k",
                 "amazon-beauty", "synthetic", "--quiet"):
        assert name in proc.stdout, name
    assert "inject" not in proc.stdout and "sleep" not in proc.stdout


def test_one_progress_line_per_epoch_and_quiet(tmp_path):
    args = ["--dataset", "synthetic", "--synthetic", json.dumps(TINY["synthetic"]),
            "--max-len", "8", "--embedding-dim", "8", "--epochs", "3", "--patience", "5",
            "--wandb-mode", "disabled"]
    proc = cli("recsys_core.train", *args, "--out", tmp_path / "a")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert [line.split()[1] for line in lines[:3]] == ["1/3", "2/3", "3/3"]
    history = __import__("pandas").read_parquet(tmp_path / "a" / "history.parquet")
    for line, loss in zip(lines[:3], history["train_loss"]):
        assert f"loss {loss:.4f}" in line and "val_recall@10" in line and "best" in line
    assert lines[3].startswith("COMPLETED: test recall@10") and len(lines) == 4
    quiet = cli("recsys_core.train", *args, "--quiet", "--out", tmp_path / "b")
    assert quiet.returncode == 0 and len(quiet.stdout.strip().splitlines()) == 1
    # a reader that goes away ends the lines, not the run
    piped = subprocess.run(f"{sys.executable} -m recsys_core.train "
                           + " ".join(f"'{a}'" for a in args) + f" --out {tmp_path / 'c'} | head -1",
                           shell=True, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert piped.stdout.startswith("epoch 1/3") and "Traceback" not in piped.stderr
    assert json.loads((tmp_path / "c" / "result.json").read_text())["status"] == "COMPLETED"


def test_sweep_without_slurm_says_so_in_one_line_and_writes_nothing(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(json.dumps({"name": "s", "fixed": TINY, "grid": {"model": ["pop"]}}))
    (tmp_path / "bin").mkdir()
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{tmp_path / 'bin'}"}
    line = one_line_error(cli("launcher", "sweep", grid, "--out", tmp_path / "out", env=env))
    assert "no sbatch" in line and "--executor local" in line
    assert not (tmp_path / "out").exists()
    help_text = cli("launcher", "sweep", "--help").stdout
    assert "slurm (default" in " ".join(help_text.split())


def test_bad_launcher_arguments_are_one_line():
    line = one_line_error(cli("launcher", "sweep", "quickstart", "--executor", "cloud"))
    assert "invalid choice: 'cloud'" in line and "local" in line


def test_status_into_head_has_no_broken_pipe(tmp_path):
    grid = tmp_path / "g.yaml"     # a sweep with enough cells to fill the pipe past `head`
    grid.write_text(json.dumps({"name": "many", "fixed": TINY,
                                "grid": {"model": ["pop"], "seed": list(range(1500))}}))
    assert cli("launcher", "sweep", grid, "--executor", "dry-run", "--out",
               tmp_path / "s").returncode == 0
    proc = subprocess.run(f"{sys.executable} -m launcher status {tmp_path / 's'} | head -3",
                          shell=True, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert len(proc.stdout.splitlines()) == 3
    assert proc.stderr == "", proc.stderr


def test_reordered_grid_is_the_same_sweep_and_another_cell_set_is_refused(tmp_path):
    body = {"name": "o", "fixed": TINY, "grid": {"model": ["pop", "sasrec"], "seed": [1, 2]}}
    first, reordered, grown = tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "c.yaml"
    first.write_text(json.dumps(body))
    reordered.write_text(json.dumps({"grid": {"seed": [1, 2], "model": ["pop", "sasrec"]},
                                     "fixed": dict(reversed(list(TINY.items()))), "name": "o"}))
    grown.write_text(json.dumps({**body, "grid": {"model": ["pop", "sasrec"], "seed": [1, 2, 3]}}))
    out = tmp_path / "sweep"
    assert cli("launcher", "sweep", first, "--executor", "dry-run", "--out", out).returncode == 0
    ids = [c["id"] for c in json.loads((out / "manifest.json").read_text())["cells"]]
    again = cli("launcher", "sweep", reordered, "--executor", "dry-run", "--out", out)
    assert again.returncode == 0, again.stderr
    assert [c["id"] for c in json.loads((out / "manifest.json").read_text())["cells"]] == ids
    line = one_line_error(cli("launcher", "sweep", grown, "--executor", "dry-run", "--out", out))
    assert "adds 2 cell(s)" in line and "removes no cell" in line and "s3" in line


def states(sweep):
    proc = cli("launcher", "status", sweep, "--json")
    assert proc.returncode == 0, proc.stderr
    return {r["name"]: r for r in json.loads(proc.stdout)}


def test_ctrl_c_of_a_local_sweep_then_resume_runs_exactly_the_unfinished_cells(tmp_path):
    """Two fast pop cells, then two slow SASRec cells, one at a time (--order grid). Ctrl-C
    (SIGINT to the terminal's process group) while the first SASRec cell trains: one line,
    exit 130; the running cell is CANCELLED (interrupted), the last one NOT_STARTED; `resume`
    without SLURM runs exactly those two and leaves the completed cells' results untouched."""
    grid = tmp_path / "g.yaml"
    grid.write_text(json.dumps({
        "name": "ctrlc", "fixed": {**TINY, "epochs": 3},
        "grid": {"model": ["pop", "sasrec"], "seed": [1, 2]},
        "overrides": [{"when": {"model": "sasrec"}, "set": {"epoch_sleep_s": 1.0}}]}))
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "launcher", "sweep", str(grid), "--executor",
                             "local", "--workers", "1", "--order", "grid", "--out", str(sweep)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 120
    sasrec1 = None
    while time.time() < deadline and sasrec1 is None:
        time.sleep(0.3)
        if (sweep / "manifest.json").exists():
            cells = json.loads((sweep / "manifest.json").read_text())["cells"]
            first = next(c for c in cells if c["name"] == "sasrec-synthetic-L8-s1")
            if (sweep / "cells" / first["id"] / "local.pid").exists():
                sasrec1 = first
    assert sasrec1 is not None, "the first SASRec cell never started"
    while_running = states(sweep)
    assert while_running["sasrec-synthetic-L8-s2"]["state"] == "PENDING"   # queued, launcher alive
    os.killpg(proc.pid, signal.SIGINT)            # what Ctrl-C in a terminal does
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
    assert "2 finished (2 completed, 0 failed), 1 interrupted, 1 not started" in stderr
    after = states(sweep)
    assert {n: r["state"] for n, r in after.items()} == {
        "pop-synthetic-L8-s1": "COMPLETED", "pop-synthetic-L8-s2": "COMPLETED",
        "sasrec-synthetic-L8-s1": "CANCELLED", "sasrec-synthetic-L8-s2": "NOT_STARTED"}
    assert "interrupted" in after["sasrec-synthetic-L8-s1"]["reason"]
    table = cli("launcher", "status", sweep).stdout
    assert "2/4 finished" not in table and "CANCELLED 1" in table and "NOT_STARTED 1" in table
    row = next(line for line in table.splitlines() if line.endswith("sasrec-synthetic-L8-s2"))
    assert row.split()[1:3] == ["NOT_STARTED", "-"]       # the state wider than its header
    pops = [sweep / "cells" / after[n]["id"] / "result.json" for n in after if n.startswith("pop")]
    stamps = [p.stat().st_mtime_ns for p in pops]
    lines_before = len((sweep / "submissions.jsonl").read_text().splitlines())
    resumed = cli("launcher", "resume", sweep, "--workers", "1")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming 2 cell(s)" in resumed.stdout
    new = [json.loads(x) for x in (sweep / "submissions.jsonl").read_text().splitlines()][lines_before:]
    assert sorted(s["cell"] for s in new) == sorted(after[n]["id"] for n in after
                                                    if n.startswith("sasrec"))
    assert [p.stat().st_mtime_ns for p in pops] == stamps          # completed cells untouched
    assert {r["state"] for r in states(sweep).values()} == {"COMPLETED"}


def wait_for(condition, what: str, launcher: subprocess.Popen, timeout_s: float = 120):
    deadline = time.time() + timeout_s
    while not condition():
        assert launcher.poll() is None, f"{what}: the launcher ended: {launcher.communicate()}"
        assert time.time() < deadline, f"{what}: not within {timeout_s:.0f} s"
        time.sleep(0.1)


def slow_sweep(tmp_path, name: str, *args: str):
    """A local sweep of three slow SASRec cells, 2 at a time, started in a session of its own
    (its process group is the terminal's); (the launcher, the sweep, its cell folders) once
    the sweep folder exists."""
    grid = tmp_path / "g.yaml"
    grid.write_text(json.dumps({"name": name, "fixed": {**TINY, "epochs": 3,
                                                        "epoch_sleep_s": 1.5},
                                "grid": {"model": ["sasrec"], "seed": [1, 2, 3]}}))
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "launcher", "sweep", str(grid), "--executor",
                             "local", "--workers", "2", *args, "--out", str(sweep)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    wait_for(lambda: (sweep / "manifest.json").exists(), "the sweep folder", proc)
    cells = [sweep / "cells" / c["id"] for c in
             json.loads((sweep / "manifest.json").read_text())["cells"]]
    return proc, sweep, cells


@pytest.mark.parametrize("mode", [[], ["--process-per-cell"]], ids=["workers", "process-per-cell"])
def test_ctrl_c_that_reaches_the_cells_first_cancels_them_never_fails_them(tmp_path, mode):
    """Ctrl-C reaches the launcher and its cells' processes together, and the cells may act on
    it first (a GPU run under `timeout -s INT` recorded its running cells FAILED: they ended
    on the signal, and the launcher counted as interrupted only cells ending within
    INTERRUPT_SLACK_S of its own handling of it, and only if it handled it while waiting).
    Here the two running cells' processes get SIGINT first and their ends are recorded; the
    third cell starts in their place; the launcher's whole process group gets SIGINT only well
    after (past INTERRUPT_SLACK_S, the launcher's only allowance before). Every cell is
    CANCELLED, none FAILED, nothing prints a traceback, and `resume` completes all three from
    their checkpoints."""
    from launcher.executors.interrupt import INTERRUPT_SLACK_S
    proc, sweep, cells = slow_sweep(tmp_path, "late", *mode)

    def trained() -> list:      # the cells with an epoch's checkpoint, what resume starts from
        return [c for c in cells if (c / "checkpoint.pt").exists()]

    wait_for(lambda: len(trained()) == 2, "two cells' first epoch", proc)
    first = trained()
    for cell in first:      # Ctrl-C reaches these cells' processes ...
        os.kill(int((cell / "local.pid").read_text()), signal.SIGINT)
    [third] = [c for c in cells if c not in first]
    wait_for(lambda: all((c / "local.exit").exists() for c in first)
             and (third / "checkpoint.pt").exists()
             and time.time() > max((c / "local.exit").stat().st_mtime for c in first)
             + INTERRUPT_SLACK_S + 0.5, "the third cell's first epoch", proc)
    os.killpg(proc.pid, signal.SIGINT)               # ... and the launcher only now
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted: 0 finished (0 completed, 0 failed), 3 interrupted, 0 not started" \
        in stderr
    logs = [c / "local.err" for c in cells] + list((sweep / "workers").glob("*.log"))
    assert not [p for p in logs if "Traceback" in p.read_text()] and "Traceback" not in stderr
    after = states(sweep)
    assert {r["state"] for r in after.values()} == {"CANCELLED"}, after
    assert all("interrupted" in r["reason"] for r in after.values())
    resumed = cli("launcher", "resume", sweep, "--workers", "3", *mode)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming 3 cell(s)" in resumed.stdout
    assert {r["state"] for r in states(sweep).values()} == {"COMPLETED"}
    for cell in cells:
        assert json.loads((cell / "result.json").read_text())["resumed_from_epoch"] >= 1


def test_ctrl_c_twice_as_gnu_timeout_sends_it_is_handled_once(tmp_path):
    """`timeout -s INT` (jobs/study_call.sh) signals the launcher, then its whole process
    group: the launcher gets SIGINT twice. A second KeyboardInterrupt raised while the first
    was handled left a GPU sweep's running cells FAILED instead of CANCELLED and printed a
    traceback (session 18). Here the second comes 10 ms after the first, while the launcher
    handles it: one line, exit 130, both running cells CANCELLED, the third NOT_STARTED."""
    proc, sweep, cells = slow_sweep(tmp_path, "twice", "--order", "grid")
    wait_for(lambda: sum((c / "checkpoint.pt").exists() for c in cells) == 2,
             "two cells' first epoch", proc)
    os.kill(proc.pid, signal.SIGINT)        # GNU timeout: the command first ...
    time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)      # ... then its process group, the command too
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert "0 finished (0 completed, 0 failed), 2 interrupted, 1 not started" in stderr
    assert sorted(r["state"] for r in states(sweep).values()) == \
        ["CANCELLED", "CANCELLED", "NOT_STARTED"]


def test_sigterm_to_the_launcher_stops_its_cells_as_ctrl_c_does(tmp_path):
    """`kill PID` (or a batch system ending the launcher's allocation) signals the launcher
    alone: it stops its running cell (CANCELLED, resumable), leaves the next NOT_STARTED, says
    so and exits 130, instead of dying silently with its cell going on alone."""
    grid = tmp_path / "g.yaml"
    grid.write_text(json.dumps({"name": "term", "fixed": {**TINY, "epochs": 5,
                                                          "epoch_sleep_s": 1.0},
                                "grid": {"model": ["sasrec"], "seed": [1, 2]}}))
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "launcher", "sweep", str(grid), "--executor",
                             "local", "--workers", "1", "--out", str(sweep)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, pid_file = time.time() + 120, None
    while time.time() < deadline and pid_file is None:
        time.sleep(0.3)
        pid_file = next(iter(sweep.glob("cells/*/local.pid")), None)
    assert pid_file is not None, "no cell started"
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    assert "0 finished (0 completed, 0 failed), 1 interrupted, 1 not started" in stderr
    assert sorted(r["state"] for r in states(sweep).values()) == ["CANCELLED", "NOT_STARTED"]
    with pytest.raises(ProcessLookupError):          # the cell's process did not go on alone
        os.kill(int(pid_file.read_text()), 0)


def test_while_cells_run_a_second_sigint_raises_nothing():
    """What the launcher runs its cells under (launcher/executors/interrupt.py): the first
    SIGINT raises KeyboardInterrupt, the next one, arriving while the first is handled, does
    nothing; afterwards SIGINT is Python's own again."""
    from launcher.executors.interrupt import interrupt_once
    handled = []
    with interrupt_once():
        try:
            signal.raise_signal(signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            signal.raise_signal(signal.SIGINT)      # GNU timeout's second signal
            time.sleep(0.05)
            handled.append("once")
    assert handled == ["once"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_once_stopping_the_launcher_outlives_a_late_second_signal():
    """What a local sweep's launcher does once its cells are stopped (LocalExecutor.wait):
    a SIGINT or SIGTERM that comes while it writes its summary and exits does nothing (it
    killed the launcher with -2 after its summary under load)."""
    code = ("import os, signal, time\n"
            "from launcher.executors.interrupt import absorb_late_signals\n"
            "absorb_late_signals()\n"
            "os.kill(os.getpid(), signal.SIGINT); os.kill(os.getpid(), signal.SIGTERM)\n"
            "time.sleep(0.2); print('summary written')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == "summary written\n", proc


def test_result_records_what_ran(mirror, tmp_path):
    proc = cli("recsys_core.train", "--model", "pop", "--dataset", "ml-100k", "--quiet",
               "--wandb-mode", "disabled", "--out", tmp_path / "pop")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "pop" / "result.json").read_text())
    assert result["data_mirror"] == str(mirror.resolve())      # from RECSYS_DATA_MIRROR
    assert result["cuda_graphs"] is False                       # no graph ran on the CPU
    assert result["tracking_error"] is None and result["tracking_mode"] is None
    synthetic = tmp_path / "syn"
    proc = cli("recsys_core.train", "--dataset", "synthetic", "--epochs", "1", "--quiet",
               "--max-len", "8", "--embedding-dim", "8", "--wandb-mode", "disabled",
               "--out", synthetic)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((synthetic / "result.json").read_text())
    assert result["data_mirror"] is None and result["cuda_graphs"] is False


def test_cancel_of_a_running_local_sweep_reaches_its_queued_cells(tmp_path):
    """`cancel` is another process than the launcher that holds a local sweep's queue. It once
    stopped only the running cell: the launcher then started the next one, so a cancelled
    queued cell ran anyway, and `cancel SWEEP` never ended the sweep. Now a queued cell it
    cancels never starts (CANCELLED in status, resumable), and cancelling the rest ends the
    launcher with a summary that says so."""
    proc, sweep, cells = slow_sweep(tmp_path, "cancel", "--workers", "1", "--order", "grid")
    first, second, third = cells
    wait_for(lambda: (first / "checkpoint.pt").exists(), "the first cell's first epoch", proc)
    one = cli("launcher", "cancel", sweep, "--cells", third.name)
    assert one.returncode == 0 and "1 local cell(s)" in one.stdout, one.stdout + one.stderr
    now = states(sweep)
    assert now["sasrec-synthetic-L8-s3"]["state"] == "CANCELLED"
    assert now["sasrec-synthetic-L8-s3"]["reason"] == \
        "cancelled before it started (resume runs it)"
    assert now["sasrec-synthetic-L8-s2"]["state"] == "PENDING"
    assert now["sasrec-synthetic-L8-s1"]["state"] == "RUNNING"
    rest = cli("launcher", "cancel", sweep)        # the running cell and the queued one
    assert rest.returncode == 0 and "2 local cell(s)" in rest.stdout, rest.stdout
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stdout + stderr
    assert "0 completed, 0 failed, 1 interrupted, 2 cancelled before they started" in stdout
    assert not (second / "local.pid").exists() and not (third / "local.pid").exists()
    after = states(sweep)
    assert {r["state"] for r in after.values()} == {"CANCELLED"}
    assert after["sasrec-synthetic-L8-s1"]["reason"] == \
        "cancelled while it ran (resume runs it again)"
    resumed = cli("launcher", "resume", sweep, "--workers", "3")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming 3 cell(s)" in resumed.stdout
    assert {r["state"] for r in states(sweep).values()} == {"COMPLETED"}
    assert not any((c / "cancelled.json").exists() for c in cells)


@pytest.mark.parametrize("mode", [[], ["--process-per-cell"]], ids=["workers", "process-per-cell"])
def test_a_local_sweep_with_a_relative_out_runs_from_any_directory(tmp_path, mode):
    """The cells' processes ran in the repository, so a relative --out typed anywhere else
    named no folder there: every cell FAILED with FileNotFoundError in the workers' log. They
    now run where the launcher runs, as a SLURM job runs where it was submitted."""
    grid = tmp_path / "g.yaml"
    grid.write_text(json.dumps({"name": "rel", "fixed": TINY,
                                "grid": {"model": ["pop", "sasrec"]}}))
    proc = subprocess.run([sys.executable, "-m", "launcher", "sweep", "g.yaml", "--executor",
                           "local", "--out", "rel", *mode], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and "2 completed, 0 failed" in proc.stdout, \
        proc.stdout + proc.stderr
    assert len(list((tmp_path / "rel" / "cells").glob("*/result.json"))) == 2
    assert {r["state"] for r in states(tmp_path / "rel").values()} == {"COMPLETED"}


def test_a_run_of_another_configuration_into_a_used_out_is_refused_and_kept(tmp_path):
    """The trainer into a folder that holds another configuration's run: a traceback, and its
    FAILED record overwrote that run's result.json and history.parquet. Now one line, exit 2,
    every file as it was, whether the folder holds a result or only a checkpoint."""
    out = tmp_path / "run"
    args = ["--dataset", "synthetic", "--epochs", "2", "--embedding-dim", "8", "--num-heads",
            "2", "--max-len", "8", "--wandb-mode", "disabled", "--quiet", "--out", out]
    assert cli("recsys_core.train", "--model", "sasrec", *args).returncode == 0

    def files() -> dict:
        return {p.name: p.read_bytes() for p in out.iterdir()}
    before = files()
    line = one_line_error(cli("recsys_core.train", "--model", "gru4rec", *args))
    assert "holds the result of another configuration (sasrec on synthetic" in line
    assert files() == before
    (out / "result.json").unlink()          # a cut run: its checkpoint, no result yet
    before = files()
    line = one_line_error(cli("recsys_core.train", "--model", "gru4rec", *args))
    assert "checkpoint.pt: made by a different configuration" in line
    assert files() == before
    again = cli("recsys_core.train", "--model", "sasrec", *args)   # its own configuration
    assert again.returncode == 0 and (out / "result.json").exists(), again.stderr
