"""Tests that guard the study's correctness where a deliberate breakage once passed the suite:
the final test uses the best epoch's weights, early stopping stops, data-parallel processes
train on disjoint shares, BERT4Rec's loss sees only masked positions, every process reads the
final best weights, and independent expectations for parameter counts and latency figures."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from recsys_core.models import build_model
from recsys_core.train import TrainConfig, run
from recsys_core.train import setup as train_setup
from recsys_core.train.batches import epoch_batches, epoch_share, padded_epoch_batches, training_batch
from recsys_core.train.eval_checkpoint import evaluate_checkpoint
from tests.conftest import REPO

TINY = dict(dataset="synthetic", synthetic={"n_users": 120, "n_items": 60,
                                            "n_interactions": 3000, "seed": 5},
            max_len=10, embedding_dim=16, num_heads=2, num_blocks=1, batch_size=64,
            lr=3e-3, wandb_mode="disabled", device="cpu")


def metrics(record, split="test"):
    return {k: v for k, v in record.items() if k.startswith(f"{split}_")}


def test_early_stopping_on_a_curve_that_peaks_early_and_the_test_uses_the_best_weights(
        tmp_path, monkeypatch):
    """Validation scripted to peak at epoch 2: with patience 3 the run stops after epoch 5,
    and its test metrics are those of best_model.pt (epoch 2), not of the last epoch."""
    curve = [0.10, 0.50, 0.30, 0.20, 0.10]
    real_evaluate = train_setup.evaluate
    calls = {"val": 0}

    def scripted(model, split, which, *args, **kw):
        out = real_evaluate(model, split, which, *args, **kw)
        if which == "val":
            i = calls["val"]
            calls["val"] += 1
            if i < len(curve):          # the epochs' validations; the final one stays real
                out["val_recall@10"] = curve[i]
        return out

    monkeypatch.setattr(train_setup, "evaluate", scripted)
    out = tmp_path / "peak"
    record = run(TrainConfig(**{**TINY, "model": "sasrec", "epochs": 20, "patience": 3,
                                "out": str(out)}))
    assert record["status"] == "COMPLETED"
    assert (record["best_epoch"], record["epochs_run"], record["stopped_early"]) == (2, 5, True)
    monkeypatch.setattr(train_setup, "evaluate", real_evaluate)
    best = evaluate_checkpoint(out, device="cpu")
    assert metrics(record) == metrics(best)
    # the last epoch's weights (checkpoint.pt) score differently: the check above can tell
    last = tmp_path / "last"
    last.mkdir()
    shutil.copy(out / "result.json", last / "result.json")
    torch.save(torch.load(out / "checkpoint.pt", weights_only=False)["model"],
               last / "best_model.pt")
    assert metrics(evaluate_checkpoint(last, device="cpu")) != metrics(record)


@pytest.mark.parametrize("world", [2, 3, 4])
def test_processes_train_on_disjoint_equal_shares_of_each_epoch(world):
    n, seed = 1003, 7
    for epoch in (1, 2):
        shares = [epoch_share(n, seed, epoch, rank, world) for rank in range(world)]
        assert {len(s) for s in shares} == {n // world}         # equal steps everywhere
        together = torch.cat(shares)
        assert len(set(together.tolist())) == len(together)     # no window twice
        assert together.min() >= 0 and together.max() < n
        # the batches each path trains on are exactly that share, in order
        for rank in range(world):
            eager = torch.cat(epoch_batches(n, 64, seed, epoch, rank, world, "cpu"))
            padded = padded_epoch_batches(n, 64, seed, epoch, "cpu", rank=rank, world=world)
            assert torch.equal(eager, shares[rank])
            assert torch.equal(padded.flatten()[: len(eager)], eager)
            assert (padded.flatten()[len(eager):] == n).all()
    assert not torch.equal(epoch_share(n, seed, 1, 0, world), epoch_share(n, seed, 2, 0, world))


def test_bert4rec_targets_are_exactly_the_masked_items():
    from recsys_core.data import LeaveOneOut, load_dataset
    cfg = TrainConfig(**{**TINY, "model": "bert4rec", "mask_prob": 0.3})
    data = load_dataset("synthetic", synthetic=TINY["synthetic"])
    split = LeaveOneOut.from_data(data, torch.device("cpu"))
    model = build_model("bert4rec", data.n_items, cfg)
    starts, ends = split.train_windows(cfg.max_len, "all")
    torch.manual_seed(0)
    inputs, targets, _ = training_batch(cfg, model, split, starts[:64], ends[:64])
    original = split.window(starts[:64], ends[:64], cfg.max_len)
    masked = inputs == model.mask_token
    assert masked.any() and (~masked & (original != 0)).any()
    assert torch.equal(targets != 0, masked)                    # a target only where masked
    assert torch.equal(targets[masked], original[masked])       # and it is the hidden item
    assert torch.equal(inputs[~masked], original[~masked])      # nothing else is touched
    # the loss is the cross-entropy over the masked positions alone
    model.eval()
    logits = model.logits(model.encode(inputs))
    expected = torch.nn.functional.cross_entropy(logits[masked], original[masked])
    assert float(model(inputs, targets)) == pytest.approx(float(expected), rel=1e-5)


def test_every_process_tests_with_the_final_best_weights(tmp_path):
    """Two CPU processes; the main process writes best_model.pt slowly in the background.
    The other process must not read it before the write is done (a stale or missing file
    would change the gathered test metrics)."""
    out = tmp_path / "ddp"
    cfg = tmp_path / "cell.json"
    cfg.write_text(json.dumps({**TINY, "model": "sasrec", "epochs": 3, "patience": 10,
                               "num_processes": 2}))
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no",
         str(REPO / "tests" / "helpers" / "slow_best_writer.py"), "--config", str(cfg),
         "--out", str(out), "--quiet"],
        capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "COMPLETED" and result["num_processes"] == 2
    assert metrics(result) == metrics(evaluate_checkpoint(out, device="cpu"))


@pytest.mark.parametrize("name", ["sasrec", "bert4rec", "gru4rec", "lstm"])
def test_parameter_counts_match_the_architecture(name):
    """Counted by hand from the architecture, not from the code's own grouping."""
    n, d, L, ffn = 50, 16, 10, 4
    cfg = TrainConfig(model=name, embedding_dim=d, num_blocks=1, num_heads=2, max_len=L)
    counts = build_model(name, n, cfg).param_counts()
    attention = 4 * d * d + 4 * d                    # q, k, v, out projections with biases
    feed_forward = d * ffn * d + ffn * d + ffn * d * d + d
    norms = 2 * d
    expected = {
        "sasrec": {"embedding": (n + 1) * d + L * d},
        "bert4rec": {"embedding": (n + 2) * d + L * d,
                     "head": d * d + d + 2 * d + (n + 1)},     # dense, LayerNorm, output bias
        "gru4rec": {"embedding": (n + 1) * d},
        "lstm": {"embedding": (n + 1) * d},
    }[name]
    for part, value in expected.items():
        assert counts[part] == value, part
    if name == "bert4rec":   # one post-LN encoder block (two LayerNorms), the embedding LayerNorm
        assert counts["backbone"] == attention + feed_forward + 2 * norms + norms
    if name == "gru4rec":
        rnn = torch.nn.GRU(d, d, batch_first=True)
        assert counts["backbone"] >= sum(p.numel() for p in rnn.parameters())


def test_latency_figures_from_known_times(monkeypatch):
    """The timing itself is replaced by known seconds: median, min, max, throughput and the
    fitted exponent follow from them by arithmetic done here."""
    from recsys_core.analysis import latency

    def fake_time_model(model, batch, length, n_items, dev, warmup, repeats, bf16):
        base = 1e-3 * (length / 8) ** 1.5             # latency ∝ L^1.5 exactly
        return [base * 0.5, base * 2.0, base]          # median = base
    monkeypatch.setattr(latency, "time_model", fake_time_model)
    table = latency.measure(["sasrec"], [8, 16, 32], batch=4, dim=16, blocks=1, heads=2,
                            n_items=50, device="cpu")
    for row in table.itertuples():
        base = 1e-3 * (row.max_len / 8) ** 1.5
        assert row.latency_ms == pytest.approx(base * 1e3)
        assert row.latency_ms_min == pytest.approx(base * 0.5e3)
        assert row.latency_ms_max == pytest.approx(base * 2e3)
        assert row.throughput_seq_s == pytest.approx(4 / base)
        assert row.throughput_tokens_s == pytest.approx(4 * row.max_len / base)
    fit = latency.fit_alpha(table)
    assert fit["alpha"].item() == pytest.approx(1.5) and fit["r2"].item() == pytest.approx(1.0)
