"""A cell that runs out of GPU memory beside other cells is run again with fewer cells per GPU
(launcher/executors/oom.py): through the CLI with fake GPUs (CUDA_VISIBLE_DEVICES; the cells
train on the CPU) and the `oom@E` fault, and the rule itself on a pool and result files."""
import json
import os
import re
import subprocess
import sys
import time

from launcher.executors.oom import PLACES_FILE, OomRetries, oom_reason
from launcher.executors.pool import GpuPool
from launcher.grid import expand, load_grid
from launcher.sweep import Sweep
from recsys_core.train.results import write_result
from tests.conftest import REPO

TINY = {"dataset": "synthetic", "synthetic": {"n_users": 60, "n_items": 30,
                                             "n_interactions": 900, "seed": 3},
        "max_len": 8, "embedding_dim": 8, "num_heads": 2, "num_blocks": 1, "batch_size": 32,
        "wandb_mode": "disabled", "device": "cpu", "epochs": 2}
OOM_REASON = ("OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a "
              "total capacity of 139.81 GiB of which 1.06 GiB is free.")


def grid(tmp_path, seeds, faults: dict[int, str]):
    path = tmp_path / "g.yaml"
    path.write_text(json.dumps({
        "name": "oom", "fixed": TINY, "grid": {"model": ["sasrec"], "seed": seeds},
        "overrides": [{"when": {"seed": s}, "set": {"inject_fault": f}} for s, f in faults.items()],
        "resources": {"gpus": 1}}))
    return path


def launcher(*args, gpus: str):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpus}
    return subprocess.run([sys.executable, "-m", "launcher", *map(str, args)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)


def cells(sweep) -> dict[int, object]:
    manifest = json.loads((sweep / "manifest.json").read_text())
    return {c["params"]["seed"]: sweep / "cells" / c["id"] for c in manifest["cells"]}


def test_a_shared_cell_out_of_memory_runs_again_with_fewer_cells_on_its_gpu(tmp_path):
    """2 GPUs x 2 places, 4 cells at once (workers): seed 1 runs out of GPU memory in epoch 2,
    seed 2 fails otherwise. Seed 1 is queued again, its GPU keeps 1 place, and its second try
    continues from its epoch-1 checkpoint to COMPLETED; seed 2 stays FAILED, never retried."""
    sweep = tmp_path / "s"
    proc = launcher("sweep", grid(tmp_path, [1, 2, 3, 4], {1: "oom@2", 2: "raise@1"}),
                    "--executor", "local", "--out", sweep, "--cells-per-gpu", "2",
                    "--order", "grid", gpus="0,1")
    assert proc.returncode == 1, proc.stdout + proc.stderr          # seed 2 failed
    folders = cells(sweep)
    event = re.search(rf"{folders[1].name} \S+: out of GPU memory on GPU (\d) shared by 2 "
                      rf"cells; places now GPU (\d) 1; try 1 of 3: queued again", proc.stdout)
    assert event and event[1] == event[2], proc.stdout
    assert proc.stdout.count(": out of GPU memory") == 1            # seed 2 is not an OOM
    assert (f"3 completed, 1 failed, 1 retried after running out of GPU memory (places now "
            f"GPU {event[1]} 1)") in proc.stdout

    retried = json.loads((folders[1] / "result.json").read_text())
    assert retried["status"] == "COMPLETED" and retried["oom_retries"] == 1
    assert retried["resumed_from_epoch"] == 1 and retried["epochs_run"] == 2
    (first,) = json.loads((folders[1] / "oom_retries.json").read_text())["retries"]
    assert first["try"] == 1 and first["shared_by"] == 2 and first["gpus"] == [event[1]]
    assert "CUDA out of memory" in first["reason"] and "inject_fault=oom@2" in first["reason"]

    failed = json.loads((folders[2] / "result.json").read_text())
    assert failed["status"] == "FAILED" and "injected failure in epoch 1" in failed["reason"]
    assert failed["oom_retries"] == 0 and not (folders[2] / "oom_retries.json").exists()
    for seed in (3, 4):
        assert json.loads((folders[seed] / "result.json").read_text())["oom_retries"] == 0

    rows = json.loads(launcher("status", sweep, "--json", gpus="0,1").stdout)
    assert sorted(r["state"] for r in rows) == ["COMPLETED"] * 3 + ["FAILED"]

    # A resume of the sweep starts that GPU at the place it was lowered to, not at 2.
    again = launcher("resume", sweep, "--cells-per-gpu", "2", gpus="0,1")
    assert again.returncode == 1 and "resuming 1 cell(s)" in again.stdout, again.stdout
    assert (f"places: GPU {event[1]} 1 (an earlier run of this sweep lowered them after cells "
            f"ran out of GPU memory; delete {sweep / 'gpu_places.json'}") in again.stdout


def test_a_cell_out_of_memory_alone_on_its_gpu_fails_at_once(tmp_path):
    """A process per cell, 2 GPUs x 1 place: each cell is alone on its GPU, so the one that
    runs out of memory would not fit however few cells shared it: FAILED, no retry."""
    sweep = tmp_path / "s"
    proc = launcher("sweep", grid(tmp_path, [1, 2], {1: "oom@2"}), "--executor", "local",
                    "--out", sweep, "--process-per-cell", gpus="0,1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    folder = cells(sweep)[1]
    assert re.search(rf"{folder.name} \S+: out of GPU memory on GPU \d, alone there: FAILED",
                     proc.stdout), proc.stdout
    assert "1 completed, 1 failed\n" in proc.stdout and "retried" not in proc.stdout
    result = json.loads((folder / "result.json").read_text())
    assert result["status"] == "FAILED" and result["reason"].startswith(
        "OutOfMemoryError: CUDA out of memory")
    assert result["runner"] == "process-per-cell" and not (folder / "oom_retries.json").exists()


def test_retries_lower_places_to_one_and_stop_after_three_tries(tmp_path):
    """The rule on a pool of 2 GPUs x 4 places and a cell's result files: each shared OOM
    lowers the GPU's places below the crowd it ran in (never below one); the third try fails for good; an OOM
    alone or another failure changes nothing; an earlier try's result is not this try's."""
    path = grid(tmp_path, [1, 2], {})
    cell, other = expand(load_grid(path))
    sweep = Sweep.create(tmp_path / "s", path, "oom", [cell, other], "local")
    folder = sweep.cell_dir(cell.id)
    lines: list[str] = []
    retries, pool = OomRetries(sweep, lines.append), GpuPool(["0", "1"], 4)

    def attempt(reason: str, neighbours: int) -> bool:
        since = time.time()
        lease = pool.take(1, prefer=["0"])
        beside = [pool.take(1, prefer=lease.gpus) for _ in range(neighbours)]
        write_result(folder, {"status": "FAILED", "reason": reason})
        again = retries.again(cell, lease, pool, since)
        for held in [lease, *beside]:
            pool.give(held)
        return again

    assert not attempt("RuntimeError: injected failure in epoch 1", neighbours=2)
    assert not attempt(OOM_REASON, neighbours=0)
    assert lines == [f"{cell.id} {cell.name}: out of GPU memory on GPU 0, alone there: FAILED "
                     "(it does not fit even alone)"]
    assert pool.places == {"0": 4, "1": 4}
    assert [attempt(OOM_REASON, neighbours=3), attempt(OOM_REASON, neighbours=2),
            attempt(OOM_REASON, neighbours=1)] == [True, True, False]
    assert pool.places == {"0": 1, "1": 4} and retries.count == 2
    assert lines[1:] == [f"{cell.id} {cell.name}: out of GPU memory on GPU 0 shared by {n} "
                         f"cells; places now GPU 0 {p}; try {k} of 3{end}"
                         for n, p, k, end in [(4, 3, 1, ": queued again"),
                                              (3, 2, 2, ": queued again"), (2, 1, 3, ": FAILED")]]
    events = json.loads((folder / "oom_retries.json").read_text())["retries"]
    assert [(e["try"], e["shared_by"], e["places_now"]) for e in events] == \
        [(1, 4, {"0": 3}), (2, 3, {"0": 2})]
    assert pool.lower({"0": 2}) == {"0": 1} and pool.free == {"0": 1, "1": 4}
    assert retries.summary() == ", 2 retried after running out of GPU memory (places now GPU 0 1)"

    # The next run of the sweep starts GPU 0 at its lowered place (the file keeps the lowest).
    later, lines[:] = GpuPool(["0", "1"], 4), []
    OomRetries(sweep, lines.append).restore(later)
    assert later.places == later.free == {"0": 1, "1": 4} and len(lines) == 1
    (sweep.root / PLACES_FILE).write_text("{not json")
    OomRetries(sweep, lines.append).restore(fresh := GpuPool(["0"], 4))
    assert fresh.places == {"0": 4} and "unreadable" in lines[-1]
    # A file that cannot be written costs the later runs the places, not this run's retry.
    (sweep.root / PLACES_FILE).unlink()
    (sweep.root / PLACES_FILE).mkdir()
    retries, pool = OomRetries(sweep, lines.append), GpuPool(["0", "1"], 4)
    assert attempt(OOM_REASON, neighbours=3) and pool.places == {"0": 3, "1": 4}
    assert lines[-2].endswith("try 1 of 3: queued again") and "not written" in lines[-1]
    OomRetries(sweep, lines.append).restore(GpuPool(["0"], 4))
    assert "unreadable" in lines[-1]

    # The result is an earlier try's: the end of local.err says why this one failed.
    stale = time.time() + 5
    (folder / "local.err").write_text("Traceback ...\nRuntimeError: CUDA error: "
                                      "CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate`\n")
    assert oom_reason(folder, stale).endswith("CUBLAS_STATUS_ALLOC_FAILED when calling "
                                              "`cublasCreate`")
    (folder / "local.err").write_text("MemoryError\ntriton OutOfResources: out of resource: "
                                      "shared memory, Required: 262144\n")
    assert oom_reason(folder, stale) is None
    assert oom_reason(folder, 0) == OOM_REASON


def test_cells_dying_of_one_crowd_lower_the_places_once(tmp_path):
    """Session 19: 7 of 12 cells that started together ran out of memory within 15 s, and
    lowering by one per failure took the places from 12 to 5. Each failure says the crowd it
    ran in was too many: three cells of a crowd of 4 leave 3 places, not 1."""
    path = grid(tmp_path, [1, 2, 3, 4], {})
    cells_ = expand(load_grid(path))
    sweep = Sweep.create(tmp_path / "s", path, "oom", cells_, "local")
    lines: list[str] = []
    retries, pool = OomRetries(sweep, lines.append), GpuPool(["0"], 4)
    since = time.time()
    leases = [pool.take(1) for _ in cells_]
    for cell, lease in zip(cells_[:3], leases):
        write_result(sweep.cell_dir(cell.id), {"status": "FAILED", "reason": OOM_REASON})
        assert retries.again(cell, lease, pool, since)
        pool.give(lease)
    assert pool.places == {"0": 3} and pool.free == {"0": 2} and retries.count == 3
    assert [line.split("; ")[1] for line in lines] == ["places now GPU 0 3"] * 3
    # The retried cells share the GPU with the fourth, 3 at once: another failure lowers to 2.
    again = [pool.take(1) for _ in range(2)]
    write_result(sweep.cell_dir(cells_[0].id), {"status": "FAILED", "reason": OOM_REASON})
    assert retries.again(cells_[0], again[0], pool, since)
    assert pool.places == {"0": 2} and "shared by 3 cells; places now GPU 0 2" in lines[-1]
