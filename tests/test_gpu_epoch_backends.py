"""benchmarks/gpu_epoch.py's Mamba backends on the CPU at tiny sizes, the triton one under
Triton's interpreter (its processes inherit TRITON_INTERPRET=1): a row per backend, the two
side by side with the same losses, and the scan check's rows (benchmarks/scan_check.py).
On a GPU: `python -m benchmarks.gpu_epoch --models mamba4rec sasmamba --mamba-backends
mambapy triton --out-dir $OUT`."""
import importlib.util

import pandas as pd
import pytest

from benchmarks import gpu_epoch

TINY = ["--device", "cpu", "--models", "mamba4rec", "--modes", "eager", "--datasets",
        "synthetic", "--synthetic", '{"n_users": 4, "n_items": 10, "n_interactions": 24}',
        "--max-len", "4", "--embedding-dim", "4", "--num-blocks", "1", "--batch-size", "8",
        "--epochs", "1", "--eval-repeats", "1", "--no-profile"]


def test_mamba_backends_side_by_side_and_the_scan_check(tmp_path, monkeypatch):
    if importlib.util.find_spec("triton") is None:
        pytest.fail("triton is not installed: `pip install -e '.[dev]'` (or `pip install "
                    "triton`); this test runs its interpreter on the CPU")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    argv = TINY + ["--mamba-backends", "mambapy", "triton", "--out-dir", str(tmp_path),
                   "--work", str(tmp_path / "work")]
    assert gpu_epoch.main(argv) == 0
    rows = pd.read_csv(tmp_path / "gpu_epoch.csv")
    assert rows[["model", "mode", "mamba_backend"]].values.tolist() == \
        [["mamba4rec", "eager", "mambapy"], ["mamba4rec", "eager", "triton"]]
    assert (rows["epoch_time_s"] > 0).all() and (rows["eval_time_s"] > 0).all()
    losses = [[float(x) for x in row.split()] for row in rows["train_loss_epochs"]]
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)      # same seed, same training
    scans = pd.read_csv(tmp_path / "scan_check.csv")
    assert scans["precision"].tolist() == ["fp32", "bf16 autocast"]
    diffs = ["y", "y_no_grad", "dx", "ddelta", "dA", "dB", "dC", "dD"]
    assert (scans.loc[0, diffs] < 1e-5).all(), scans.loc[0, diffs]
    assert (scans[["triton_forward_s", "triton_forward_backward_s"]] > 0).all().all()
    text = (tmp_path / "gpu_epoch.md").read_text()
    assert gpu_epoch.BACKENDS_TITLE in text and gpu_epoch.SCAN_TITLE in text
