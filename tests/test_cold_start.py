"""Cold-start users: the users with 2-4 interactions that the main split drops, evaluated apart
by the trained model and by the popularity fallback; their keys in every result."""
import json

import numpy as np
import pytest

from recsys_core.data import fetch, load_dataset
from recsys_core.train import TrainConfig, run
from recsys_core.train.cold_start import cold_inputs


@pytest.fixture
def small_file(tmp_path, monkeypatch):
    """30 regular users over items 1..12, then cold users: 2 items, 3 items, 4 items, one
    whose target (99) no regular user has, one with a single item (not cold: nothing to
    predict from), and one whose input holds an unknown item (98)."""
    rng = np.random.default_rng(0)
    lines = [" ".join(map(str, [u, *rng.integers(1, 13, size=6 + u % 4)])) for u in range(1, 31)]
    lines += ["101 1 2", "102 3 4 1", "103 5 6 7 1", "104 1 99", "105 2", "106 98 3 1"]
    folder = tmp_path / "s3rec"
    folder.mkdir()
    (folder / "Toys_and_Games.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.setitem(fetch.SOURCES, "toys-s3rec", fetch.Source(
        folder="s3rec", required=("Toys_and_Games.txt",)))
    monkeypatch.setenv("RECSYS_DATA_MIRROR", str(tmp_path))
    return tmp_path


def test_cold_users_are_those_with_two_to_four_items(small_file):
    data = load_dataset("toys-s3rec")
    assert data.n_users == 30 and data.stats()["cold_users"] == 5    # 105 has one item
    inputs, targets, histories, unknown = cold_inputs(data, max_len=3)
    assert unknown == 1 and len(targets) == 4                        # 104's target is 99
    raw = dict(zip(data.item_raw_ids.tolist(), range(data.n_items + 1)))
    assert targets.tolist() == [raw[2], raw[1], raw[1], raw[1]]
    assert inputs.tolist()[0] == [0, 0, raw[1]]
    assert inputs.tolist()[2] == [raw[5], raw[6], raw[7]]
    assert inputs.tolist()[3] == [0, 0, raw[3]]                      # 98 dropped: unknown


def test_every_result_reports_the_cold_users(small_file, tmp_path):
    base = dict(dataset="toys-s3rec", max_len=4, embedding_dim=8, num_blocks=1, num_heads=1,
                epochs=1, batch_size=16, device="cpu", wandb_mode="disabled")
    pop = run(TrainConfig(**base, model="pop", out=str(tmp_path / "pop")))
    assert pop["cold_users"] == 4 and pop["cold_users_unknown_target"] == 1
    for k in (5, 10, 20):     # pop is its own fallback
        assert pop[f"cold_test_recall@{k}"] == pop[f"cold_pop_test_recall@{k}"]
    # by hand: the popularity rank of each target among the items not in the user's input
    data = load_dataset("toys-s3rec")
    counts = np.zeros(data.n_items + 1)
    for u in range(data.n_users):
        a, b = data.offsets[u], data.offsets[u + 1]
        np.add.at(counts, data.items[a:b - 2], 1)
    _, targets, histories, _ = cold_inputs(data, 4)
    hits = []
    for t, h in zip(targets, histories):
        others = [i for i in range(1, data.n_items + 1) if i not in set(h.tolist()) and i != t]
        hits.append(1 + sum(counts[i] >= counts[t] for i in others) <= 5)
    assert pop["cold_pop_test_recall@5"] == pytest.approx(np.mean(hits))

    sasrec = run(TrainConfig(**base, model="sasrec", out=str(tmp_path / "sasrec")))
    assert sasrec["status"] == "COMPLETED" and 0 <= sasrec["cold_test_ndcg@10"] <= 1
    on_disk = json.loads((tmp_path / "sasrec" / "result.json").read_text())
    assert on_disk["cold_pop_test_ndcg@10"] == pop["cold_pop_test_ndcg@10"]


def test_a_dataset_without_cold_users_says_zero(tmp_path):
    record = run(TrainConfig(model="pop", dataset="synthetic", device="cpu", epochs=1,
                             wandb_mode="disabled", out=str(tmp_path / "p"),
                             synthetic={"n_users": 40, "n_items": 20, "n_interactions": 600}))
    assert record["cold_users"] == 0 and not any(k.startswith("cold_test") for k in record)


def test_the_main_table_gets_a_cold_start_group(small_file, tmp_path):
    import pandas as pd

    from launcher.__main__ import main as launcher_main
    from launcher.grid import expand, load_grid
    from launcher.sweep import Sweep
    grid = tmp_path / "cold.yaml"
    grid.write_text(json.dumps({
        "name": "cold", "grid": {"model": ["pop", "gru4rec"], "seed": [1, 2]},
        "fixed": {"dataset": "toys-s3rec", "max_len": 4, "embedding_dim": 8, "epochs": 1,
                  "batch_size": 16, "device": "cpu", "wandb_mode": "disabled"}}))
    cells = expand(load_grid(grid))
    sweep = Sweep.create(tmp_path / "s", grid, "cold", cells, "local")
    for c in cells:      # in this process: the test's dataset source is patched here only
        run(c.config.model_copy(update={"out": str(sweep.cell_dir(c.id))}))
    assert launcher_main(["aggregate", str(sweep.root), "--no-plots"]) == 0
    main = pd.read_csv(sweep.root / "aggregate" / "main.csv")
    assert set(main["cold_users"]) == {4}
    pop = main[main["model"] == "pop"].iloc[0]
    assert pop["cold_test_recall@10_mean"] == pop["cold_pop_test_recall@10_mean"]
    md = (sweep.root / "aggregate" / "main.md").read_text()
    assert "cold pop Recall@10" in md
    # the training budget beside the metrics: both seeds' best epoch is the 1-epoch cap
    gru = main[main["model"] == "gru4rec"].iloc[0]
    assert (gru["best_epoch_max"], gru["epochs_cap"], gru["near_cap"]) == (1, 1, 2)
    assert "1 / 1 (2 near cap)" in md and pop["near_cap"] == 0
