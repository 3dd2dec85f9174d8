"""The job callable the launcher submits: runs a cell from its directory, requeues boundedly."""
import os
import json
import subprocess
import sys
import time

import pytest
import submitit

from jobs.train_cell import TrainCell, rendezvous_port
from tests.conftest import REPO


def make_cell(tmp_path, **params):
    cell = tmp_path / "cells" / "abc123"
    cell.mkdir(parents=True)
    config = {"model": "pop", "dataset": "synthetic", "wandb_mode": "disabled",
              "run_id": "abc123", "wandb_group": "t", **params}
    (cell / "cell.json").write_text(json.dumps({
        "id": "abc123", "name": "pop-synthetic", "sweep": "t", "params": {}, "config": config}))
    return cell


def test_cli_runs_a_cell_directory(tmp_path):
    cell = make_cell(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "jobs.train_cell", str(cell)], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((cell / "result.json").read_text())
    assert result["status"] == "COMPLETED" and result["run_id"] == "abc123"
    assert result["wandb_group"] == "t" and result["out"] == str(cell)


def test_a_cells_recorded_times_cover_its_process_up_to_its_result(tmp_path):
    """Start-up (the process's start, from /proc and the boot clock, to run(): the interpreter
    and every import, the trainer's too) and the run's wall time leave nothing out: the
    trainer's imports (about 1 s here) were once in neither."""
    cell = make_cell(tmp_path)
    before = time.time()
    proc = subprocess.run([sys.executable, "-m", "jobs.train_cell", str(cell)], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((cell / "result.json").read_text())
    took = (cell / "result.json").stat().st_mtime - before
    unrecorded = took - result["time_start_s"] - result["wall_time_s"]
    assert -0.02 < unrecorded < 0.3, (took, result["time_start_s"], result["wall_time_s"])


def test_a_process_start_is_when_it_began():
    before = time.time()
    out = subprocess.run([sys.executable, "-c", "import time; now = time.time()\n"
                          "from jobs.timing import process_start; print(process_start(), now)"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    start, now = map(float, out.split())
    assert before - 0.02 < start <= now     # starttime counts whole 10 ms clock ticks


EXITING = r"""
import atexit, ctypes, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from recsys_core.cli import exit_cli
out = sys.argv[1]
atexit.register(lambda: open(out + ".atexit", "w").close())
def late():
    time.sleep(0.3)
    open(out + ".thread", "w").close()
threading.Thread(target=late).start()
ThreadPoolExecutor(1).submit(print, "pool", end=" ").result()   # leaves an idle worker thread
class Garbage:
    def __del__(self, open=open, path=out + ".teardown"):    # the globals are gone by then
        open(path, "w").close()
garbage = Garbage()
print("python line", end="")                       # in sys.stdout's buffer
ctypes.CDLL(None).printf(b"C line\n")              # in C's stdout buffer: a pipe, not a tty
exit_cli(int(sys.argv[2]))
"""


def test_a_job_process_ends_without_teardown_but_pays_what_its_exit_owes(tmp_path):
    """exit_cli after the work is done: the interpreter's teardown is skipped (an object freed
    only by it is never freed), while the exit code, a thread still working, the idle pool
    thread, the atexit handlers and both Python's and C's buffered output are as sys.exit
    leaves them; with WORLD_SIZE > 1 it ends at once (no handlers), output still flushed."""
    out = str(tmp_path / "p")
    proc = subprocess.run([sys.executable, "-c", EXITING, out, "3"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert "pool python line" in proc.stdout and "C line" in proc.stdout
    assert os.path.exists(out + ".atexit") and os.path.exists(out + ".thread")
    assert not os.path.exists(out + ".teardown")
    subprocess.run([sys.executable, "-c", EXITING.replace("exit_cli(", "sys.exit("), out + "s",
                    "0"], cwd=REPO, check=True, timeout=60)
    assert os.path.exists(out + "s.teardown")            # what the interpreter's teardown does
    several = subprocess.run([sys.executable, "-c", EXITING, out + "w", "0"], cwd=REPO,
                             capture_output=True, text=True, timeout=60,
                             env={**os.environ, "WORLD_SIZE": "2"})
    assert several.returncode == 0 and "C line" in several.stdout
    assert not os.path.exists(out + "w.atexit")


def test_bad_cell_file_is_a_clear_error(tmp_path):
    cell = make_cell(tmp_path, optimizer="sgd")
    proc = subprocess.run([sys.executable, "-m", "jobs.train_cell", str(cell)], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "cell.json" in proc.stderr and "optimizer" in proc.stderr


def test_help_is_the_usage_and_no_directory_is_a_usage_error():
    for args, code in ((["--help"], 0), ([], 2), (["a", "b"], 2)):
        proc = subprocess.run([sys.executable, "-m", "jobs.train_cell", *args], cwd=REPO,
                              capture_output=True, text=True)
        assert proc.returncode == code and proc.stderr.startswith(
            "usage: python -m jobs.train_cell CELL_DIR"), proc.stderr


def test_a_cell_file_without_its_config_is_a_clear_error(tmp_path):
    cell = make_cell(tmp_path)
    (cell / "cell.json").write_text(json.dumps({"id": "abc123", "params": {"model": "pop"}}))
    proc = subprocess.run([sys.executable, "-m", "jobs.train_cell", str(cell)], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "cell.json: cannot read the cell's config" in proc.stderr


def test_requeues_are_bounded(tmp_path):
    cell = make_cell(tmp_path)
    job = TrainCell(str(cell), max_requeues=2)
    for expected in (1, 2):
        again = job.checkpoint()
        assert isinstance(again, submitit.helpers.DelayedSubmission)
        assert json.loads((cell / "requeues.json").read_text())["count"] == expected
    assert job.checkpoint() is None          # the third signal: no more requeues


def test_the_preemption_signal_writes_the_epoch_held_back_before_the_requeue(tmp_path):
    """Between checkpoint files (at most every checkpoint_every_s) the trainer holds its last
    finished epoch in memory; submitit's USR2 handler, TrainCell.checkpoint (or a pack's,
    TrainPack.checkpoint), writes it before the requeue, so the requeued job resumes from that
    epoch. checkpoint_every_s 0 writes every epoch."""
    import torch
    from recsys_core.train import TrainConfig
    from recsys_core.train import checkpoint as ckpt
    from recsys_core.train.setup import make_accelerator
    out = tmp_path / "out"
    out.mkdir()
    cfg = TrainConfig(device="cpu", wandb_mode="disabled", out=str(out))
    accelerator = make_accelerator(cfg)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())

    def epoch_on_disk():
        return torch.load(out / ckpt.CHECKPOINT, weights_only=False)["state"]["epoch"]

    writer = ckpt.Writer(every_s=3600)
    for epoch in (1, 2, 3):
        writer.save_best(out, model)         # as the trainer does: best, then the epoch
        writer.save(out, cfg, accelerator, model, optimizer, None, ckpt.TrainState(epoch=epoch))
        writer.wait()
        assert epoch_on_disk() == 1          # the first epoch's file; the later ones held
    (out / ckpt.BEST).unlink()
    cell = make_cell(tmp_path)
    again = TrainCell(str(cell)).checkpoint()
    assert isinstance(again, submitit.helpers.DelayedSubmission)
    assert epoch_on_disk() == 3 and (out / ckpt.BEST).exists()
    from jobs.pack import TrainPack        # a pack's job: its running cell's epoch, the same way
    writer.save(out, cfg, accelerator, model, optimizer, None, ckpt.TrainState(epoch=4))
    assert isinstance(TrainPack([str(cell)]).checkpoint(), submitit.helpers.DelayedSubmission)
    assert epoch_on_disk() == 4
    every = ckpt.Writer(every_s=0)
    for epoch in (5, 6):
        every.save(out, cfg, accelerator, model, optimizer, None, ckpt.TrainState(epoch=epoch))
        every.wait()
        assert epoch_on_disk() == epoch


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_ctrl_c_writes_the_last_finished_epoch_before_the_cell_ends(tmp_path, stop):
    """Ctrl-C (or `timeout -s INT`, or the local launcher stopping its cells; or SIGTERM alone)
    between checkpoint files: the cell's process writes the epoch it last finished, then ends
    with 130 and no result, so that resume continues from that epoch, not from the first."""
    import signal

    import torch
    from recsys_core.train.results import read_history
    cell = make_cell(tmp_path, model="sasrec", epochs=30, max_len=10, embedding_dim=16,
                     num_heads=2, num_blocks=1, batch_size=64, checkpoint_every_s=3600.0,
                     synthetic={"n_users": 120, "n_items": 60, "n_interactions": 3000})
    spec = json.loads((cell / "cell.json").read_text())
    spec["debug_hooks"] = {"epoch_sleep_s": 0.4}
    (cell / "cell.json").write_text(json.dumps(spec))
    proc = subprocess.Popen([sys.executable, "-m", "jobs.train_cell", str(cell)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while len(read_history(cell, "epoch")) < 3 and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(getattr(signal, stop))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    saved = torch.load(cell / "checkpoint.pt", weights_only=False)["state"]["epoch"]
    assert saved >= 3 and saved == len(read_history(cell, "epoch"))
    assert not (cell / "result.json").exists()


def test_a_requeued_multi_node_job_never_takes_the_port_of_its_run_before(tmp_path, monkeypatch):
    """Node 0 publishes its rendezvous port in the cell directory. A requeued job keeps its id,
    so the other nodes must wait for this run's port, not take the last run's."""
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    first = rendezvous_port(tmp_path, node_rank=0)
    assert rendezvous_port(tmp_path, node_rank=1) == first
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")              # the same job, requeued
    with pytest.raises(RuntimeError, match="node 0 never published its port"):
        rendezvous_port(tmp_path, node_rank=1, timeout_s=0.6)
    second = rendezvous_port(tmp_path, node_rank=0)
    assert rendezvous_port(tmp_path, node_rank=1) == second


def test_compile_caches_live_in_the_sweep_unless_the_environment_says(tmp_path, monkeypatch):
    from jobs.train_cell import shared_compile_caches
    cell = tmp_path / "sweep" / "cells" / "abc"
    cell.mkdir(parents=True)
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items()
                                        if k not in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")})
    shared_compile_caches(cell)                       # no manifest: not a sweep, left alone
    assert "TRITON_CACHE_DIR" not in os.environ
    (tmp_path / "sweep" / "manifest.json").write_text("{}")
    os.environ["TRITON_CACHE_DIR"] = "/shared/triton"
    shared_compile_caches(cell)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "sweep" / ".cache" / "inductor")
    assert os.environ["TRITON_CACHE_DIR"] == "/shared/triton"   # the user's choice kept


def test_a_cancel_that_lands_inside_an_import_waits_until_the_import_is_done(tmp_path,
                                                                            monkeypatch):
    """`launcher cancel` of a pack's running cell (USR1) raises in that cell; when the signal
    lands in the middle of an import, the exception waits for the import to finish, so the
    pack's next cell does not find a half-made module (CI, session 12: torch._dynamo, cut
    while a cell's first optimiser imported it, failed the next cell's import)."""
    import signal
    from jobs.pack import CANCELLED, CellCancelled, TrainPack
    cell = tmp_path / "cell"
    cell.mkdir()
    (cell / CANCELLED).write_text("{}")
    pack = TrainPack([str(cell)])
    pack.current = str(cell)
    (tmp_path / "slow_import.py").write_text(
        "import os, signal, time\n"
        "os.kill(os.getpid(), signal.SIGUSR1)    # cancelled mid-import\n"
        "for _ in range(30):\n    time.sleep(0.01)\n"
        "DONE = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    previous = signal.signal(signal.SIGUSR1, pack._cancel_current)
    try:
        with pytest.raises(CellCancelled):
            import slow_import  # noqa: F401
            time.sleep(5)       # the cancel comes here, after the import
    finally:
        signal.signal(signal.SIGUSR1, previous)
        module = sys.modules.pop("slow_import", None)
    assert module is not None and module.DONE


def test_bytecode_goes_to_the_sweep_where_the_stack_has_none_beside_its_sources(tmp_path):
    """A cell's process on an image without .pyc (the device's: PYTHONDONTWRITEBYTECODE set,
    none in site-packages; torch's import 3.3 s instead of 1.7) writes and reads bytecode under
    `<sweep>/.cache/pycache`; where the probe package has its .pyc, or the environment names
    its own prefix, nothing changes."""
    import py_compile
    pkg = tmp_path / "lib" / "stackpkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("VALUE = 1\n")
    cell = tmp_path / "sweep" / "cells" / "abc"
    cell.mkdir(parents=True)
    (tmp_path / "sweep" / "manifest.json").write_text("{}")
    code = ("import sys; from pathlib import Path; import jobs.train_cell as t; "
            "import recsys_core.bytecode as b; b.BYTECODE_PROBE = 'stackpkg'; "
            "t.shared_compile_caches(Path(sys.argv[1])); "
            "import stackpkg, os; print(sys.pycache_prefix, os.environ.get('PYTHONDONTWRITEBYTECODE'))")

    def run(**env):
        base = {k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"}
        out = subprocess.run([sys.executable, "-c", code, str(cell)], cwd=REPO, text=True,
                             capture_output=True, timeout=60,
                             env={**base, "PYTHONPATH": f"{tmp_path / 'lib'}:{REPO}",
                                  "PYTHONDONTWRITEBYTECODE": "1", **env})
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    cache = tmp_path / "sweep" / ".cache" / "pycache"
    assert run() == [str(cache), "None"]
    assert list(cache.rglob("stackpkg/__init__*.pyc")), "no bytecode in the sweep's cache"
    assert not (pkg / "__pycache__").exists()                # nothing beside the sources
    assert run(PYTHONPYCACHEPREFIX=str(tmp_path / "mine")) == [str(tmp_path / "mine"), "1"]
    shared = tmp_path / "shared"                 # RECSYS_PYCACHE: a benchmark's --warm runs
    assert run(RECSYS_PYCACHE=str(shared)) == [str(shared), "None"]
    assert list(shared.rglob("stackpkg/__init__*.pyc"))
    # the launcher's own process: its bytecode under ~/.cache/recsys_core/pycache, for itself
    # only (the cells it starts keep their sweep's)
    launcher_code = ("import sys, os; import recsys_core.bytecode as b; "
                     "b.BYTECODE_PROBE = 'stackpkg'; import launcher.__main__; import stackpkg; "
                     "print(sys.pycache_prefix, os.environ.get('PYTHONPYCACHEPREFIX'))")
    home = tmp_path / "home"
    out = subprocess.run([sys.executable, "-c", launcher_code], cwd=REPO, text=True,
                         capture_output=True, timeout=60,
                         env={**{k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"},
                              "PYTHONPATH": f"{tmp_path / 'lib'}:{REPO}", "HOME": str(home),
                              "PYTHONDONTWRITEBYTECODE": "1"})
    assert out.returncode == 0, out.stderr
    mine = home / ".cache" / "recsys_core" / "pycache"
    assert out.stdout.split() == [str(mine), "None"]
    assert list(mine.rglob("stackpkg/__init__*.pyc")) and list(mine.rglob("launcher/grid*.pyc"))
    py_compile.compile(str(pkg / "__init__.py"))            # the .pyc beside it: left alone
    assert run() == ["None", "1"]
