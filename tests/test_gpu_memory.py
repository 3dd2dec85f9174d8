"""Cells start on a GPU only while their measured peaks fit in its memory
(launcher/executors/memory.py, pool.py): the rule on a pool, a cell's need read from its own
or its other seeds' histories, and a local run through the CLI with a fake GPU
(CUDA_VISIBLE_DEVICES; the cells train on the CPU) and `--gpu-memory-gb`."""
import json
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd

from launcher.executors.memory import CONTEXT_MB, SLACK, MemoryNeeds
from launcher.executors.pool import GpuPool
from launcher.grid import expand, load_grid
from launcher.sweep import Sweep
from recsys_core.train.results import write_result
from tests.test_oom_retry import cells, grid, launcher


def history(cell_dir, peaks: list[float | None]) -> None:
    cell_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"epoch": range(1, len(peaks) + 1),
                  "peak_gpu_mem_mb": pd.array(peaks, dtype="Float64")}
                 ).to_parquet(cell_dir / "history.parquet")


def test_a_gpu_running_cells_takes_another_only_while_their_needs_fit():
    pool = GpuPool(["0", "1"], 4, memory_mb={"0": 10_000})
    big = pool.take(1, prefer=["0"], need_mb=9_000)     # alone on GPU 0: taken
    assert big.gpus == ["0"] and pool.used_mb["0"] == 9_000
    unknown = pool.take(1, prefer=["0"])                # need unknown (0): places only
    assert unknown.gpus == ["0"]
    other = pool.take(1, prefer=["0"], need_mb=2_000)   # no room on 0; 1 has no known memory
    assert other.gpus == ["1"]
    pool.give(other)
    waiting: list = []
    pool.take(1, need_mb=60_000)                        # GPU 1: no known memory, places only
    t = threading.Thread(target=lambda: waiting.append(pool.take(1, prefer=["0"], need_mb=2_000)))
    pool.free["1"] = 0                                  # only GPU 0 is left to wait for
    t.start()
    t.join(0.5)
    assert t.is_alive() and not waiting                 # 9,000 + 2,000 > 10,000: it waits
    pool.give(big)
    t.join(5)
    assert waiting and waiting[0].gpus == ["0"] and pool.used_mb["0"] == 2_000
    assert waiting[0].memory_wait_s >= 0.4 and big.memory_wait_s == 0.0
    too_big = GpuPool(["0"], 2, memory_mb={"0": 10_000}).take(1, need_mb=50_000)
    assert too_big.gpus == ["0"]                        # alone it runs (and fails) as before


def test_a_cells_need_is_its_own_peak_else_its_other_seeds_else_unknown(tmp_path):
    path = grid(tmp_path, [1, 2, 3], {})
    first, second, third = cells_ = expand(load_grid(path))
    sweep = Sweep.create(tmp_path / "s", path, "mem", cells_, "local")
    needs = MemoryNeeds(sweep)
    assert [needs.need_mb(c) for c in cells_] == [0.0, 0.0, 0.0] and needs.measured(cells_) == 0
    history(sweep.cell_dir(second.id), [None, None])           # a CPU run measures nothing
    assert needs.need_mb(first) == 0.0
    history(sweep.cell_dir(first.id), [3_000.0, 5_000.0, 4_000.0])
    assert needs.need_mb(first) == needs.need_mb(second) == 5_000 * SLACK + CONTEXT_MB
    history(sweep.cell_dir(third.id), [8_000.0])               # its own, and the largest
    assert needs.need_mb(third) == 8_000 * SLACK + CONTEXT_MB
    assert needs.need_mb(second) == 8_000 * SLACK + CONTEXT_MB and needs.measured(cells_) == 3
    (sweep.cell_dir(first.id) / "history.parquet").write_text("torn")
    assert needs.need_mb(first) == 8_000 * SLACK + CONTEXT_MB
    pd.DataFrame({"epoch": [1]}).to_parquet(sweep.cell_dir(third.id) / "history.parquet")
    assert needs.need_mb(third) == 0.0 and needs.measured(cells_) == 0    # no such column


def test_a_fresh_sweeps_needs_cost_the_launcher_no_pandas(tmp_path):
    """No cell has a history yet: none is read, and the launcher imports neither pandas nor
    pyarrow's dataset layer for it (0.55 s of its start on an H100 host)."""
    path = tmp_path / "fresh.yaml"     # (a synthetic dataset's check imports pandas itself)
    path.write_text(json.dumps({"name": "fresh", "fixed": {"dataset": "ml-100k"},
                                "grid": {"model": ["sasrec"], "seed": [1, 2]},
                                "resources": {"gpus": 1}}))
    code = f"""
import sys
from pathlib import Path
from launcher.executors.memory import MemoryNeeds
from launcher.grid import expand, load_grid
from launcher.sweep import Sweep
path = Path({str(path)!r})
cells = expand(load_grid(path))
needs = MemoryNeeds(Sweep.create(path.parent / "s", path, "mem", cells, "local"))
assert needs.measured(cells) == 0
print(sorted(m for m in ("pandas", "pyarrow.dataset") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).parent.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_local_run_starts_no_cell_beside_one_whose_measured_peak_fills_the_gpu(tmp_path):
    """3 places on one GPU of 10 GB; seed 1 finished earlier with a 6 GB peak, so each of the
    other three needs 6 GB × SLACK + a context: they run one after another, not at once."""
    sweep = tmp_path / "s"
    made = launcher("sweep", grid(tmp_path, [1, 2, 3, 4], {}), "--executor", "dry-run",
                    "--out", sweep, gpus="0")
    assert made.returncode == 0, made.stderr
    folders = cells(sweep)
    history(folders[1], [6_000.0])
    write_result(folders[1], {"status": "COMPLETED"})
    proc = launcher("resume", sweep, "--executor", "local", "--cells-per-gpu", "3",
                    "--gpu-memory-gb", "10", gpus="0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ("memory: GPU 0 10 GB; a cell starts on a GPU while the measured peaks of the cells "
            "there fit (3 of 3 cells measured, or a seed of theirs)") in proc.stdout
    spans = sorted(((folders[s] / "local.pid").stat().st_mtime,
                    (folders[s] / "result.json").stat().st_mtime) for s in (2, 3, 4))
    assert all(json.loads((folders[s] / "result.json").read_text())["status"] == "COMPLETED"
               for s in (2, 3, 4))
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:])), spans
    assert proc.stdout.count("s for GPU memory (needs 7.4 GB on GPU 0)") == 2, proc.stdout

    bad = launcher("resume", sweep, "--executor", "local", "--gpu-memory-gb", "0", gpus="0")
    assert bad.returncode == 2 and "argument --gpu-memory-gb: 0: must be more than 0" in bad.stderr
