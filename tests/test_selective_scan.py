"""The Mamba layers' `triton` backend (models/selective_scan.py) against mambapy's scan, on the
CPU under Triton's interpreter (tests/helpers/scan_twin.py, a process of its own since the
interpreter must be on before the kernels are defined): the output and every gradient at fp32
precision on small odd shapes (L odd, ED not a power of two, several ED blocks, N 16, 8 and
5, the layer's strided inputs, bf16 inputs as under autocast), and a tiny model trained
through the trainer with either backend. The GPU's figures: `python -m benchmarks.gpu_epoch
--backends mambapy triton` (benchmarks/scan_check.py)."""
import json

import pytest

from tests.helpers.interpreter import interpreted

CASES = {   # name -> shape; block_e: ED channels per program (default min(32, next pow2 ≥ ED))
    "L7 ED12 N16, 2 blocks of 8": dict(rows=2, L=7, ED=12, N=16, block_e=8, layout="contiguous"),
    "L9 ED10 N8, 1 block of 16": dict(rows=2, L=9, ED=10, N=8, layout="contiguous"),
    "layer's strides, L5 ED6 N5": dict(rows=2, L=5, ED=6, N=5, block_e=4, layout="model"),
    "bf16 x B C, L5 ED6 N8": dict(rows=2, L=5, ED=6, N=8, layout="bf16"),
}
FP32 = 1e-5        # max |ours - mambapy| / max |mambapy| (both fp32; measured ~1e-7)
GRADS = ("dx", "ddelta", "dA", "dB", "dC", "dD")


@pytest.fixture(scope="module")
def kernel_diffs(tmp_path_factory) -> dict:
    cases = [{**shape, "seed": i} for i, shape in enumerate(CASES.values())]
    diffs = interpreted("scan_twin", "kernels", json.dumps(cases), tmp_path=tmp_path_factory.mktemp("scan"))
    return dict(zip(CASES, diffs))


@pytest.mark.parametrize("case", [c for c in CASES if "bf16" not in c])
def test_triton_scan_equals_mambapy_forward_and_every_gradient(case, kernel_diffs):
    d = kernel_diffs[case]
    assert max(d[k] for k in ("y", "y_no_grad", *GRADS)) < FP32, d
    assert d["y_dtype"] == "torch.float32" and d["grad_dtypes"] == d["input_dtypes"]


def test_triton_scan_of_bf16_inputs_computes_in_fp32_and_returns_their_dtypes(kernel_diffs):
    """x, B, C in bf16 (the layer under autocast): y is fp32 and equals mambapy on the same
    values in fp32; their gradients come back in bf16 (rounded: 2^-8 relative)."""
    d = kernel_diffs["bf16 x B C, L5 ED6 N8"]
    assert d["y"] < FP32 and d["y_no_grad"] < FP32 and d["y_dtype"] == "torch.float32"
    assert d["grad_dtypes"] == d["input_dtypes"] == ["torch.bfloat16", "torch.float32",
                                                     "torch.float32", "torch.bfloat16",
                                                     "torch.bfloat16", "torch.float32"]
    assert max(d[k] for k in ("ddelta", "dA", "dD")) < FP32, d
    assert max(d[k] for k in ("dx", "dB", "dC")) < 1e-2, d


def test_tiny_mamba4rec_trains_the_same_with_either_backend(tmp_path):
    """Through the trainer (two steps, then validation and test): the same losses, gradient
    norms, metrics and weights, the backend in result.json; a checkpoint of the mambapy run
    loads into a triton-built model and scores alike."""
    res = interpreted("scan_twin", "trainer", "mamba4rec", tmp_path=tmp_path)
    ref, ours = res["mambapy"], res["triton"]
    assert (ref["status"], ours["status"]) == ("COMPLETED", "COMPLETED")
    assert (ref["mamba_backend"], ours["mamba_backend"]) == ("mambapy", "triton")
    for key in ("train_loss", "grad_norm"):
        assert ours[key] == pytest.approx(ref[key], rel=1e-5), (key, ours[key], ref[key])
    assert ours["val_ndcg@10"] == pytest.approx(ref["val_ndcg@10"], rel=1e-6)
    assert res["weights_rel_diff"] < 1e-5 and res["loaded_scores_rel_diff"] < 1e-5, res
