"""`--mps` of the local executor through the CLI, with a fake `nvidia-cuda-mps-control` first
on the PATH (it records every call; `-d` opens the pipe folder's `control` as the daemon does)
and cells that take a GPU of CUDA_VISIBLE_DEVICES while training on the CPU."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

TINY = {"dataset": "synthetic", "synthetic": {"n_users": 60, "n_items": 30,
                                             "n_interactions": 900, "seed": 3},
        "max_len": 8, "embedding_dim": 8, "num_heads": 2, "num_blocks": 1, "batch_size": 32,
        "wandb_mode": "disabled", "device": "cpu", "epochs": 1}

FAKE = '''#!{python}
import json, os, sys, time
from pathlib import Path
pipe = Path(os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps"))
stdin = "" if sys.argv[1:] else sys.stdin.read()
with open({record!r}, "a") as f:
    f.write(json.dumps({{"argv": sys.argv[1:], "stdin": stdin, "time": time.time(),
                        "pipe": os.environ.get("CUDA_MPS_PIPE_DIRECTORY"),
                        "log": os.environ.get("CUDA_MPS_LOG_DIRECTORY")}}) + "\\n")
if sys.argv[1:] == ["-d"]:
    if {refuse!r} == "race":   # another launcher's daemon came up a moment before
        (pipe / "control").write_text("")
        sys.exit("An instance of this daemon is already running")
    if {refuse!r}:
        sys.exit("fake: the daemon cannot start here")
    (pipe / "control").write_text("")
elif stdin.strip() == "quit":
    (pipe / "control").unlink()
elif stdin.strip() == "get_server_list":   # servers: what the test put in the pipe folder
    if (pipe / "servers").exists():
        print((pipe / "servers").read_text())
    sys.exit(0 if (pipe / "control").exists() else 1)
elif stdin.startswith("get_client_list "):
    clients = pipe / ("clients-" + stdin.split()[1])
    print(clients.read_text() if clients.exists() else "")
'''


def fake_control(tmp_path: Path, refuse: bool | str = False) -> tuple[Path, Path]:
    """(a bin folder with the fake in it, the file it records its calls in)."""
    bin_dir, record = tmp_path / "bin", tmp_path / "mps-calls.jsonl"
    bin_dir.mkdir()
    exe = bin_dir / "nvidia-cuda-mps-control"
    exe.write_text(FAKE.format(python=sys.executable, record=str(record), refuse=refuse))
    exe.chmod(0o755)
    return bin_dir, record


def calls(record: Path) -> list[dict]:
    return [json.loads(line) for line in record.read_text().splitlines()] \
        if record.exists() else []


def grid(tmp_path: Path, gpus: int = 1) -> Path:
    path = tmp_path / "g.yaml"
    path.write_text(json.dumps({
        "name": "mps", "fixed": TINY, "grid": {"model": ["sasrec", "gru4rec", "pop"]},
        "overrides": [{"when": {"model": "pop"}, "set": {"resources": {"gpus": 0}}}],
        "resources": {"gpus": gpus}}))
    return path


def launcher(*args, env: dict):
    return subprocess.run([sys.executable, "-m", "launcher", *map(str, args)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)


def results(sweep: Path) -> dict[str, tuple[dict, Path]]:
    out = {}
    for cell in (sweep / "cells").iterdir():
        result = json.loads((cell / "result.json").read_text())
        out[result["model"]] = (result, cell)
    return out


def test_mps_daemon_runs_for_the_sweep_and_every_gpu_cell_is_its_client(tmp_path):
    bin_dir, record = fake_control(tmp_path)
    # The launcher sees GPU 3 only: the daemon inherits that, and its clients call it GPU 0.
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CUDA_VISIBLE_DEVICES": "3"}
    env.pop("CUDA_MPS_PIPE_DIRECTORY", None)
    sweep = tmp_path / "s"
    proc = launcher("sweep", grid(tmp_path), "--executor", "local", "--out", sweep,
                    "--cells-per-gpu", "2", "--mps", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    start, quit_ = calls(record)[0], calls(record)[-1]
    try:
        assert [c["argv"] for c in calls(record)].count(["-d"]) == 1 and start["argv"] == ["-d"]
        assert quit_["stdin"] == "quit\n" and quit_["pipe"] == start["pipe"]
        pipe, log = start["pipe"], start["log"]
        assert pipe.startswith("/tmp/recsys-mps-") and len(pipe) <= 80
        assert log == str(sweep / "mps") and quit_["log"] == log
        assert f"MPS: started a daemon on {pipe}" in proc.stdout
        done = results(sweep)
        assert {r["status"] for r, _ in done.values()} == {"COMPLETED"}
        for model in ("sasrec", "gru4rec"):       # one GPU each: clients of the daemon
            result, cell = done[model]
            assert result["runner"] == "worker" and result["mps_pipe_dir"] == pipe
            assert result["cells_per_gpu"] == 2     # told so: it gives back its eval's memory
            assert (f"MPS client: CUDA_MPS_PIPE_DIRECTORY={pipe} CUDA_MPS_LOG_DIRECTORY={log} "
                    "CUDA_VISIBLE_DEVICES=0") in (cell / "local.err").read_text()
            assert start["time"] < (cell / "local.pid").stat().st_mtime
            assert quit_["time"] >= (cell / "result.json").stat().st_mtime
        pop, cell = done["pop"]                   # no GPU: not a client
        assert pop["mps_pipe_dir"] is None and "MPS client" not in (cell / "local.err").read_text()
        assert pop["cells_per_gpu"] is None
    finally:
        shutil.rmtree(start["pipe"], ignore_errors=True)

    # A daemon already listening on the user's pipe folder is used, and left running; a
    # process per cell is its client too.
    pipe = Path(f"/tmp/recsys-mps-test-{os.getpid()}")
    pipe.mkdir()
    (pipe / "control").write_text("")
    record.unlink()
    try:
        proc = launcher("resume", sweep, "--executor", "local", "--process-per-cell", "--mps",
                        env={**env, "CUDA_MPS_PIPE_DIRECTORY": str(pipe)})
        assert proc.returncode == 0 and "nothing to resume" in proc.stdout, proc.stderr
        other = tmp_path / "s2"
        proc = launcher("sweep", grid(tmp_path), "--executor", "local", "--out", other,
                        "--where", "model=sasrec", "--process-per-cell", "--mps",
                        env={**env, "CUDA_MPS_PIPE_DIRECTORY": str(pipe)})
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"MPS: using the daemon listening on {pipe}" in proc.stdout
        assert [c["stdin"] for c in calls(record)] == ["get_server_list\n"]
        (result, cell), = results(other).values()
        assert result["runner"] == "process-per-cell" and result["mps_pipe_dir"] == str(pipe)
        assert result["cells_per_gpu"] == 1
        assert (pipe / "control").exists()
    finally:
        shutil.rmtree(pipe, ignore_errors=True)


def test_mps_without_the_binary_or_a_daemon_starts_no_cell(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path / "empty"), "CUDA_VISIBLE_DEVICES": "0"}
    proc = launcher("sweep", grid(tmp_path), "--executor", "local", "--out", tmp_path / "s",
                    "--mps", env=env)
    assert proc.returncode == 2 and "nvidia-cuda-mps-control is not on the PATH" in proc.stderr
    assert "without --mps" in proc.stderr and not (tmp_path / "s").exists()

    bin_dir, record = fake_control(tmp_path, refuse=True)
    env["PATH"] = f"{bin_dir}:{os.environ['PATH']}"
    env["CUDA_MPS_PIPE_DIRECTORY"] = str(tmp_path / "pipe")
    proc = launcher("sweep", grid(tmp_path), "--executor", "local", "--out", tmp_path / "s",
                    "--mps", env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "`nvidia-cuda-mps-control -d` exited 1: fake: the daemon cannot start here" \
        in proc.stderr and "no cell was started" in proc.stderr
    assert not list((tmp_path / "s" / "cells").glob("*/local.pid"))
    assert [c["argv"] for c in calls(record)] == [["-d"]]


def test_mps_is_a_no_op_without_gpu_cells_and_refused_for_slurm_scripts(tmp_path):
    bin_dir, record = fake_control(tmp_path)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CUDA_VISIBLE_DEVICES": ""}
    proc = launcher("sweep", grid(tmp_path), "--executor", "local", "--out", tmp_path / "s",
                    "--where", "model=pop", "--mps", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "--mps: no cell runs on a GPU here; MPS is not started" in proc.stdout
    assert not record.exists()

    proc = launcher("sweep", grid(tmp_path), "--executor", "dry-run", "--out", tmp_path / "d",
                    "--mps", env=env)
    assert proc.returncode == 2 and "--mps is for --executor local" in proc.stderr
    assert "gres/mps" in proc.stderr and not (tmp_path / "d").exists()


def test_the_launcher_asks_nvidia_smi_for_the_gpus_once_per_sweep(tmp_path):
    """Without CUDA_VISIBLE_DEVICES the local executor lists the GPUs with `nvidia-smi -L`
    (here a fake that records its calls): once, though it plans the cells before submitting
    them and again before running them."""
    bin_dir, record = tmp_path / "bin", tmp_path / "smi-calls"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\necho \"$@\" >> {record}\necho 'GPU 0: Fake (UUID: GPU-f)'\n")
    smi.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    proc = launcher("sweep", grid(tmp_path), "--executor", "local", "--process-per-cell",
                    "--out", tmp_path / "s", "--where", "model=sasrec", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "on GPU 0" in proc.stdout                  # the cell took the GPU nvidia-smi listed
    assert record.read_text().splitlines() == ["-L"]


def test_a_daemon_another_launcher_started_a_moment_before_is_used_and_left_running(tmp_path):
    # Five launchers started at once on one pipe folder (jobs/study_call.sh's RERUN_AT_ONCE):
    # one's `-d` lost the race, said "already running", and that launcher started no cell.
    bin_dir, record = fake_control(tmp_path, refuse="race")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CUDA_VISIBLE_DEVICES": "0",
           "CUDA_MPS_PIPE_DIRECTORY": str(tmp_path / "pipe")}
    proc = launcher("sweep", grid(tmp_path), "--executor", "local", "--out", tmp_path / "s",
                    "--mps", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {m: r["status"] for m, (r, _) in results(tmp_path / "s").items()} == \
        {"sasrec": "COMPLETED", "gru4rec": "COMPLETED", "pop": "COMPLETED"}
    assert (tmp_path / "pipe" / "control").exists()       # not this launcher's to stop
    assert "quit" not in [c["stdin"].strip() for c in calls(record)]


def test_a_daemon_this_run_started_is_left_running_while_another_runs_clients_use_it(tmp_path):
    # `quit` makes the daemon refuse new clients while it waits for the connected ones: the
    # other launcher on this pipe folder could start no further cell.
    bin_dir, record = fake_control(tmp_path)
    pipe = tmp_path / "pipe"
    pipe.mkdir()
    (pipe / "servers").write_text("4242\n")
    (pipe / "clients-4242").write_text(f"{os.getpid()}\n999999999\n")   # alive; long gone
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CUDA_VISIBLE_DEVICES": "0",
           "CUDA_MPS_PIPE_DIRECTORY": str(pipe)}
    proc = launcher("sweep", grid(tmp_path), "--executor", "local", "--out", tmp_path / "s",
                    "--mps", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"MPS: started a daemon on {pipe}" in proc.stdout
    assert f"warning: MPS: the daemon this run started on {pipe} still serves 1 client(s) " \
        "of another run: left running" in proc.stderr
    assert "quit" not in [c["stdin"].strip() for c in calls(record)]
    assert (pipe / "control").exists()

    (pipe / "clients-4242").write_text("999999999\n")      # only a client that has ended
    (pipe / "control").unlink()
    proc = launcher("sweep", grid(tmp_path), "--executor", "local", "--out", tmp_path / "s2",
                    "--mps", env=env)
    assert proc.returncode == 0 and "warning: MPS" not in proc.stderr, proc.stderr
    assert calls(record)[-1]["stdin"] == "quit\n" and not (pipe / "control").exists()
