"""`fused_layer_norm: true` (models/fused_layer_norm.py): its Triton kernels against torch's
LayerNorm under Triton's interpreter on the CPU (tests/helpers/layer_norm_twin.py), a model's
LayerNorms swapped in place, a training run through the command line, and the kernels compiled
during setup with the specialisation of their first calls. Its speed on a GPU: `python -m
benchmarks.layer_norm`."""
import json
import os
import subprocess
import sys

import pytest
import torch

from recsys_core.models import fused_layer_norm
from recsys_core.models.fused_layer_norm import FusedLayerNorm, fuse_layer_norms
from recsys_core.train.precompile import kernels_to_precompile
from tests.helpers.interpreter import interpreted
from tests.test_precompile import Recorder, cell, specialisation


def test_kernels_match_torchs_layer_norm_forward_and_backward(tmp_path):
    cases = [  # the Beauty step's rows and width; a width not a power of two, rows not a
        # multiple of a block; bf16 input (no autocast: bf16 out, as torch's)
        {"seed": 0, "shape": [300, 64], "dtype": "float32", "eps": 1e-8},
        {"seed": 1, "shape": [4, 37, 48], "dtype": "float32", "eps": 1e-5},
        {"seed": 2, "shape": [70, 64], "dtype": "bfloat16", "eps": 1e-12}]
    rows = interpreted("layer_norm_twin", "kernel", json.dumps(cases), tmp_path=tmp_path)
    for case, row in zip(cases, rows):
        assert row["dtypes"] == [f"torch.{case['dtype']}"] * 2, case
        tolerance = 1e-5 if case["dtype"] == "float32" else 1e-2    # bf16's rounding: 2^-8
        assert max(row[k] for k in ("y", "dx", "dw", "db")) < tolerance, (case, row)


def test_models_with_fused_layer_norms_train_as_with_torchs(tmp_path):
    result = interpreted("layer_norm_twin", "model", tmp_path=tmp_path)
    # SASRec (the paper's block): 2 blocks x 2 + the final one; BERT4Rec: 2 x 2, the
    # embeddings' and the output head's
    assert {k: (v["count"], v["fused"]) for k, v in result.items()} == \
        {"sasrec": (5, 5), "bert4rec": (6, 6)}
    for name, r in result.items():
        assert r["same_state"], name                   # checkpoints are unchanged
        assert r["loss"][1] == pytest.approx(r["loss"][0], rel=1e-6), name
        assert r["max_grad_diff"] < 1e-5, (name, r["max_grad_diff"])


def test_only_plain_layer_norms_over_the_last_dimension_are_swapped():
    model = torch.nn.Sequential(torch.nn.LayerNorm(8), torch.nn.LayerNorm(8, bias=False),
                                torch.nn.LayerNorm([4, 8]),
                                torch.nn.LayerNorm(8, elementwise_affine=False))
    assert fuse_layer_norms(model) == 1
    assert [type(m) is FusedLayerNorm for m in model] == [True, False, False, False]
    x = torch.randn(3, 4, 8)
    assert torch.equal(model[0](x), torch.nn.functional.layer_norm(x, (8,), model[0].weight,
                                                                    model[0].bias))  # CPU: torch's


def train_cli(out, *extra, interpret: str):
    env = {**os.environ, "TRITON_INTERPRET": interpret}
    proc = subprocess.run([sys.executable, "-m", "recsys_core.train", "--model", "sasrec",
                           "--dataset", "synthetic", "--epochs", "2", "--max-len", "8",
                           "--embedding-dim", "8", "--num-blocks", "1", "--num-heads", "2",
                           "--batch-size", "64", "--sasrec-block", "original",
                           "--wandb-mode", "disabled", "--device", "cpu", "--out", str(out),
                           *extra], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


def test_a_run_with_fused_layer_norm_records_them_and_trains_as_without(tmp_path):
    pytest.importorskip("triton")
    fused = train_cli(tmp_path / "fused", "--fused-layer-norm", interpret="1")
    plain = train_cli(tmp_path / "plain", interpret="1")
    off = train_cli(tmp_path / "cpu", "--fused-layer-norm", interpret="0")
    assert fused["layer_norm_kernels"] == "triton (3 LayerNorms)" and fused["fused_layer_norm"]
    assert "layer_norm_kernels" not in plain and plain["fused_layer_norm"] is False
    assert off["layer_norm_kernels"] == "torch (not CUDA)"
    assert fused["config_hash"] == plain["config_hash"]     # how it runs, not what is trained
    for key in ("best_epoch", "val_recall@10", "test_recall@10", "test_ndcg@10"):
        assert fused[key] == pytest.approx(plain[key], abs=1e-6), key


def test_precompiled_layer_norm_kernels_have_the_specialisation_of_their_first_calls(
        monkeypatch):
    """A training step's forward and backward under bf16 autocast and an evaluation batch of
    other rows (as the GPU runs them, fp32 inside the kernels) against what precompile compiled."""
    pytest.importorskip("triton")
    cfg, acc, split, model = cell("sasrec", "bf16")
    fuse_layer_norms(model)
    jobs = kernels_to_precompile(cfg, model, split, acc.mixed_precision, fixed_step=True)
    # in the order of their first calls: the training step's, then the evaluation's
    assert list(jobs) == ["fused_ce", "layer_norm_16", "rank_counts"]
    kernels = fused_layer_norm._kernels()
    recorders = (Recorder(), Recorder())
    monkeypatch.setattr(fused_layer_norm, "_KERNELS", recorders)
    monkeypatch.setattr(fused_layer_norm, "kernels_run_on", lambda device_type: True)
    jobs["layer_norm_16"]()
    ids = split.inputs("val", cfg.max_len)
    with acc.autocast():
        model(ids[:16], ids[:16].roll(1, 1), None).backward()
        with torch.no_grad():
            model.eval()
            model.score_next(ids[:7])
    for kernel, rec in zip(kernels, recorders):
        assert rec.launches and len(rec.warmups) == 1
        first = specialisation(kernel, rec.warmups[0])
        assert all(specialisation(kernel, c) == first for c in rec.launches)


def test_the_benchmark_runs_both_under_the_interpreter_and_writes_its_table(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.layer_norm", "--shapes", "40x24",
                           "--block-values", "256", "2048", "--out", str(tmp_path),
                           "--name", "t"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import pandas as pd
    rows = pd.read_csv(tmp_path / "t.csv").to_dict("records")
    assert [(r["rows"], r["width"], r["block_values"], r["warps"]) for r in rows] == \
        [(40, 24, 256, 4), (40, 24, 2048, 4)]       # 8 rows of 32 a block, then all 40 in one
    for row in rows:
        assert row["triton_fwd_bwd_us"] > 0
        assert max(row[f"diff_{n}"] for n in ("y", "dx", "dw", "db")) < 1e-5
