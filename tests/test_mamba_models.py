"""The Mamba models' own parts: the layers take the configuration's options, parameters
count as embedding and backbone, evaluation in row chunks (mambapy only) scores as one batch,
and the backend is mamba_ssm or the triton scan only on CUDA where they import. (Their
contract with the trainer, padding and causality: test_models.py, with every model; the
triton scan against mambapy's: test_selective_scan.py.)"""
import sys
import types

import pytest
import torch

from recsys_core.models import build_model
from recsys_core.models.ssm import mamba_backend, mamba_layer
from recsys_core.train import TrainConfig
from recsys_core.train.fused_ce import fused_loss_unsupported_reason
from tests.test_models import MAMBA, N_ITEMS, config, left_padded, make


@pytest.mark.parametrize("name", MAMBA)
def test_mamba_models_take_their_options_and_count_their_parts(name):
    cfg = TrainConfig(model=name, embedding_dim=16, num_blocks=2, max_len=12, d_state=8,
                      d_conv=3, expand=1)
    model = build_model(name, N_ITEMS, cfg)
    assert model.mamba_backend == "mambapy"      # on the CPU, whatever is installed
    for block in model.blocks:
        assert block.mamba.A_log.shape == (16, 8)             # (expand x D, d_state)
        assert block.mamba.conv1d.kernel_size == (3,)
    counts = model.param_counts()
    embedding = (N_ITEMS + 1) * 16 + (12 * 16 if name == "sasmamba" else 0)  # + positions
    assert counts["embedding"] == embedding and counts["head"] == 0
    assert counts["backbone"] == counts["total"] - embedding
    assert fused_loss_unsupported_reason(model) is None   # the GPU step's fused loss applies


@pytest.mark.parametrize("name", MAMBA)
def test_mamba_models_score_large_batches_in_chunks_with_the_same_scores(name):
    model = make(name, dropout=0.0).eval()
    history = left_padded([1, 5, 12, 12, 7], 12)
    calls, encode = [], model.encode
    model.encode = lambda ids: calls.append(len(ids)) or encode(ids)
    with torch.no_grad():
        whole = model.score_next(history)
        model.SCAN_ELEMENTS = 2 * 16 * model.scan_width       # 2 rows (L 12 scans as 16)
        chunked = model.score_next(history)
    assert calls == [5, 2, 2, 1]
    torch.testing.assert_close(chunked, whole)


def test_triton_backend_scores_all_rows_at_once(monkeypatch):
    """Without a gradient its scan keeps no [rows, L, ED, N] tensor: no chunks."""
    monkeypatch.setenv("RECSYS_MAMBA_BACKEND", "triton")
    model = make("mamba4rec").eval()
    model.SCAN_ELEMENTS = 16 * model.scan_width               # 1 row for mambapy
    calls = []
    model.encode = lambda ids: calls.append(len(ids)) or torch.zeros(*ids.shape, 16)
    with torch.no_grad():
        assert model.score_next(left_padded([1, 5, 12], 12)).shape == (3, N_ITEMS + 1)
    assert calls == [3]


def test_mamba_backend_is_mamba_ssm_then_triton_on_cuda_where_they_import(monkeypatch):
    """On CUDA: mamba_ssm's kernels where the package imports (its Mamba layer built with the
    same arguments as mambapy's), else the triton scan where triton imports, else mambapy;
    mambapy on the CPU."""
    assert mamba_backend("cpu") == "mambapy"
    monkeypatch.setitem(sys.modules, "mamba_ssm", None)       # not installed
    assert mamba_backend("cuda") == "triton"                  # a dev install has triton
    monkeypatch.setitem(sys.modules, "triton", None)
    assert mamba_backend("cuda") == "mambapy"
    built = {}
    fake = types.ModuleType("mamba_ssm")
    fake.Mamba = lambda **kwargs: built.update(kwargs) or torch.nn.Identity()
    monkeypatch.setitem(sys.modules, "mamba_ssm", fake)
    assert mamba_backend("cpu") == "mambapy" and mamba_backend("cuda") == "mamba_ssm"
    model = build_model("mamba4rec", N_ITEMS, config(d_state=8), device_type="cuda")
    assert model.mamba_backend == "mamba_ssm"
    assert built == dict(d_model=16, d_state=8, d_conv=4, expand=2)
    with pytest.raises(ValueError, match="mamba_ssm, triton, mambapy"):
        mamba_layer(16, 8, 4, 2, backend="cuda")


def test_mamba_backend_from_the_environment(monkeypatch):
    monkeypatch.setenv("RECSYS_MAMBA_BACKEND", "triton")
    assert mamba_backend("cpu") == "triton"
    monkeypatch.setenv("RECSYS_MAMBA_BACKEND", "pscan")
    with pytest.raises(ValueError, match="RECSYS_MAMBA_BACKEND='pscan'; valid: mamba_ssm, "
                                         "triton, mambapy"):
        mamba_backend("cuda")


@pytest.mark.parametrize("name", MAMBA)
def test_triton_backend_has_mambapy_parameters_and_initialisation(name, monkeypatch):
    """The triton backend is mambapy's layer with another scan: the same parameter names and,
    from the same seed, the same values (checkpoints load across backends; training through
    both: test_selective_scan.py)."""
    states = {}
    for backend in ("mambapy", "triton"):
        monkeypatch.setenv("RECSYS_MAMBA_BACKEND", backend)
        model = make(name)
        assert model.mamba_backend == backend
        states[backend] = model.state_dict()
    assert type(make(name).blocks[0].mamba).__name__ == "TritonMambaBlock"
    assert list(states["triton"]) == list(states["mambapy"])
    assert all(torch.equal(states["triton"][k], v) for k, v in states["mambapy"].items())
