"""The GRU's own backward (models/gru_backward.py): its torch twin against autograd through
nn.GRU in float64, and its Triton kernel and the GRU4Rec model that uses it against the twin
and autograd under Triton's interpreter on the CPU (tests/helpers/gru_twin.py, a process of its
own: the interpreter must be on before the kernel is built). The GPU's figures: `python -m
benchmarks.gpu_epoch --models gru4rec --rnn-dropout torch` (results/benchmarks/gru_backward/)."""
import json

import pytest
import torch
from torch import nn

from recsys_core.models.gru_backward import (BACKWARD_ENV, backward_choice, gru_layer,
                                             own_backward_fits, walk_torch)
from recsys_core.models.gru4rec import GRU4Rec
from tests.helpers.interpreter import interpreted


@pytest.mark.parametrize("rows,length,size,inputs", [(3, 7, 4, 4), (2, 1, 8, 5), (4, 6, 16, 16)])
def test_the_gradient_of_the_own_backward_is_autograds_through_torch_gru(rows, length, size, inputs):
    torch.manual_seed(0)
    layer = nn.GRU(inputs, size, batch_first=True).double()
    x = torch.randn(rows, length, inputs, dtype=torch.double, requires_grad=True)
    weight = torch.randn(rows, length, size, dtype=torch.double)      # a loss that uses every output
    (layer(x)[0] * weight).sum().backward()
    expected = [x.grad.clone()] + [p.grad.clone() for p in layer.parameters()]
    x.grad = None
    layer.zero_grad()
    out = gru_layer(layer, x, walk=walk_torch)
    assert torch.allclose(out, layer(x)[0], rtol=0, atol=1e-12)
    (out * weight).sum().backward()
    got = [x.grad] + [p.grad for p in layer.parameters()]
    names = ["x"] + [n for n, _ in layer.named_parameters()]
    for name, a, b in zip(names, got, expected):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12), name


def test_which_grus_take_the_own_backward_and_how_it_is_chosen(monkeypatch):
    assert own_backward_fits(nn.GRU(64, 64, batch_first=True))
    assert not own_backward_fits(nn.GRU(64, 64, num_layers=2, batch_first=True, dropout=0.2))
    assert not own_backward_fits(nn.GRU(48, 48, batch_first=True))     # not a power of two
    assert not own_backward_fits(nn.GRU(256, 256, batch_first=True))   # W_hh past the registers
    assert not own_backward_fits(nn.LSTM(64, 64, batch_first=True))
    assert not own_backward_fits(nn.GRU(64, 64))                          # time-first
    monkeypatch.delenv(BACKWARD_ENV, raising=False)
    assert (backward_choice("cuda"), backward_choice("cpu")) == ("triton", "cudnn")
    monkeypatch.setenv(BACKWARD_ENV, "cudnn")
    assert backward_choice("cuda") == "cudnn"
    monkeypatch.setenv(BACKWARD_ENV, "triton")              # at the model's build, not its backward
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="RECSYS_GRU_BACKWARD=triton needs a CUDA device"):
        GRU4Rec(n_items=10, embedding_dim=16)
    monkeypatch.setenv(BACKWARD_ENV, "fast")
    with pytest.raises(ValueError, match="RECSYS_GRU_BACKWARD='fast'; valid: cudnn, triton"):
        backward_choice("cuda")


def test_the_triton_kernel_on_the_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    layer = nn.GRU(16, 16, batch_first=True)
    x = torch.randn(2, 3, 16, requires_grad=True)
    with pytest.raises(RuntimeError, match="only under Triton's interpreter"):
        gru_layer(layer, x).sum().backward()


def test_the_triton_walk_equals_its_torch_twin(tmp_path):
    """Rows not a multiple of the kernel's 16 (a masked program), one and several positions."""
    cases = [dict(rows=20, L=5, H=16, seed=0), dict(rows=16, L=1, H=32, seed=1),
             dict(rows=3, L=4, H=16, seed=2)]
    diffs = interpreted("gru_twin", "kernel", json.dumps(cases), tmp_path=tmp_path)
    assert max(diffs) < 1e-5, diffs


def test_gru4rec_trains_through_the_own_backward_as_through_autograd(tmp_path):
    """GRU4Rec of 2 layers with torch's dropout between them (StackedRNN), left padding: the
    same loss, and every parameter's gradient within fp32 rounding of autograd's."""
    r = interpreted("gru_twin", "model", tmp_path=tmp_path)
    assert r["own"] == [False, True]
    assert r["loss"][0] == r["loss"][1] and r["grads"]
    assert r["max_diff"] < 1e-5, r


def test_the_benchmark_refuses_a_shape_the_own_backward_does_not_take(capsys):
    """Where the own backward cannot run, both of benchmarks.gru_backward's rows would time
    cuDNN's: it stops first (exit 2, before looking for a GPU)."""
    from benchmarks.gru_backward import main
    assert main(["--embedding-dim", "48"]) == 2
    assert "--embedding-dim 48: the own backward takes hidden sizes 16-64" in capsys.readouterr().err
