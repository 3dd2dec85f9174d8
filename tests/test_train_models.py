"""Every model through the trainer on the synthetic data: a complete result, and better than
popularity (which the data is built to defeat) after a few epochs; the Mamba models through
the command line too."""
import json
import subprocess
import sys

import pytest

from recsys_core.train import TrainConfig, run
from tests.conftest import REPO

DATA = dict(dataset="synthetic", synthetic={"n_users": 200, "n_items": 80,
                                            "n_interactions": 5000, "seed": 11},
            max_len=16, embedding_dim=32, num_heads=2, num_blocks=1, batch_size=64,
            patience=20, wandb_mode="disabled", device="cpu")
EPOCHS = {"sasrec": 5, "gru4rec": 5, "lstm": 5, "xlstm": 5, "bert4rec": 12, "mamba4rec": 5,
          "sasmamba": 5}


@pytest.fixture(scope="module")
def pop_recall(tmp_path_factory):
    out = tmp_path_factory.mktemp("pop")
    return run(TrainConfig(**DATA, model="pop", out=str(out)))["test_recall@10"]


@pytest.mark.parametrize("model", sorted(EPOCHS))
def test_model_trains_writes_complete_result_and_beats_pop(model, pop_recall, tmp_path):
    record = run(TrainConfig(**DATA, model=model, epochs=EPOCHS[model], lr=5e-3,
                             out=str(tmp_path)))
    on_disk = json.loads((tmp_path / "result.json").read_text())
    assert on_disk["status"] == "COMPLETED" and on_disk["epochs_run"] == EPOCHS[model]
    assert on_disk["params_total"] > 0 and on_disk["epoch_time_s"] > 0
    assert (tmp_path / "history.parquet").exists() and (tmp_path / "best_model.pt").exists()
    assert on_disk.get("mamba_backend") == ("mambapy" if "mamba" in model else None)
    assert record["test_recall@10"] > pop_recall + 0.05, (model, record["test_recall@10"], pop_recall)


@pytest.mark.parametrize("model", ["mamba4rec", "sasmamba"])
def test_mamba_models_from_the_command_line_with_their_options(model, tmp_path):
    """One epoch on the synthetic data through `python -m recsys_core.train`, the Mamba layers'
    options as flags. (One epoch of ML-100K at L 50 takes 2-3 minutes on a 2-core CPU.)"""
    flags = {"--model": model, "--dataset": "synthetic",
             "--synthetic": json.dumps(DATA["synthetic"]), "--max-len": "16",
             "--embedding-dim": "16", "--num-blocks": "1", "--epochs": "1",
             "--d-state": "8", "--d-conv": "2", "--expand": "1", "--device": "cpu",
             "--wandb-mode": "disabled", "--out": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "recsys_core.train", "--quiet",
                           *[x for kv in flags.items() for x in kv]],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "COMPLETED" and result["mamba_backend"] == "mambapy"
    assert (result["d_state"], result["d_conv"], result["expand"]) == (8, 2, 1)
