"""Run by tests/test_selective_scan.py in a process of its own under Triton's interpreter
(TRITON_INTERPRET=1, which has to be set before the kernels are defined; it runs them on CPU
tensors), writing what it measured as JSON to argv[3]:

  python -m tests.helpers.scan_twin kernels CASES_JSON OUT    models/selective_scan.py against
      mambapy's MambaBlock.selective_scan: forward, every gradient, the no-gradient forward
  python -m tests.helpers.scan_twin trainer MODEL OUT         a tiny model through the trainer
      once per backend (RECSYS_MAMBA_BACKEND), each from the same seed
"""
import json
import os
import sys
from pathlib import Path

import pandas as pd
import torch
from mambapy.mamba import MambaBlock, MambaConfig

from benchmarks.scan_check import rel
from recsys_core.models import build_model
from recsys_core.models.selective_scan import selective_scan
from recsys_core.models.ssm import BACKEND_ENV
from recsys_core.train import TrainConfig, run

NAMES = ("x", "delta", "A", "B", "C", "D")


def inputs(rows: int, L: int, ED: int, N: int, layout: str, seed: int) -> list[torch.Tensor]:
    """The scan's inputs as the Mamba layer makes them: Δ = softplus(.), A = -exp(.) < 0.
    layout "model": x and Δ transposes of [rows, ED, L] tensors, B and C slices of one
    [rows, L, 3 + 2N] projection (strides as in mambapy's layer); "bf16": x, B, C in bf16
    (the layer under bf16 autocast)."""
    g = torch.Generator().manual_seed(seed)
    x, delta = torch.randn(rows, ED, L, generator=g), torch.randn(rows, ED, L, generator=g)
    delta = torch.nn.functional.softplus(delta - 1)
    A = -torch.exp(torch.randn(ED, N, generator=g))
    BC = torch.randn(rows, L, 3 + 2 * N, generator=g)
    D = torch.randn(ED, generator=g)
    if layout == "model":
        return [x.transpose(1, 2), delta.transpose(1, 2), A, BC[..., 3:3 + N], BC[..., 3 + N:], D]
    x, delta, B, C = (t.contiguous() for t in (x.transpose(1, 2), delta.transpose(1, 2),
                                                BC[..., 3:3 + N], BC[..., 3 + N:]))
    if layout == "bf16":
        x, B, C = x.bfloat16(), B.bfloat16(), C.bfloat16()
    return [x, delta, A, B, C, D]


def compare(case: dict) -> dict:
    ins = inputs(case["rows"], case["L"], case["ED"], case["N"], case["layout"], case["seed"])
    ref = [t.detach().float().requires_grad_() for t in ins]    # mambapy in fp32 throughout
    ours = [t.detach().requires_grad_() for t in ins]           # leaves with the same strides
    block = MambaBlock(MambaConfig(d_model=4, n_layers=1, d_state=case["N"]))
    want = block.selective_scan(*ref)
    got = selective_scan(*ours, block_e=case.get("block_e"))
    dy = torch.randn(want.shape, generator=torch.Generator().manual_seed(case["seed"] + 1))
    want_grads = torch.autograd.grad(want, ref, dy)
    grads = torch.autograd.grad(got, ours, dy)
    with torch.no_grad():
        no_grad = selective_scan(*ins, block_e=case.get("block_e"))
    return {"y": rel(got, want), "y_no_grad": rel(no_grad, want), "y_dtype": str(got.dtype),
            **{f"d{n}": rel(g, w) for n, g, w in zip(NAMES, grads, want_grads)},
            "grad_dtypes": [str(g.dtype) for g in grads],
            "input_dtypes": [str(t.dtype) for t in ins]}


def trainer(model: str, out: Path) -> dict:
    """Two steps (8 users, batch 4, one epoch) with each backend; then the mambapy run's
    checkpoint loaded into a model of each backend, scoring the same histories."""
    cfg = TrainConfig(model=model, dataset="synthetic", max_len=8, embedding_dim=8, num_blocks=1,
                      num_heads=2, d_state=8, batch_size=4, epochs=1, dropout=0.0, lr=1e-2,
                      train_windows="last", wandb_mode="disabled", device="cpu", out=str(out),
                      synthetic={"n_users": 8, "n_items": 20, "n_interactions": 64, "seed": 5})
    res, weights, scores = {}, {}, {}
    for backend in ("mambapy", "triton"):
        os.environ[BACKEND_ENV] = backend
        record = run(cfg.model_copy(update={"out": str(out / backend)}))
        history = pd.read_parquet(out / backend / "history.parquet")
        res[backend] = {"status": record["status"], "mamba_backend": record["mamba_backend"],
                        "train_loss": history["train_loss"].tolist(),
                        "grad_norm": history["grad_norm"].tolist(),
                        "val_ndcg@10": record["val_ndcg@10"]}
        weights[backend] = torch.load(out / backend / "best_model.pt", map_location="cpu")
    histories = torch.tensor([[0, 0, 3, 1, 4, 1, 5, 9], [2, 6, 5, 3, 5, 8, 9, 7]])
    for backend in ("mambapy", "triton"):
        os.environ[BACKEND_ENV] = backend
        twin = build_model(model, record["dataset_items"], cfg).eval()
        twin.load_state_dict(weights["mambapy"])
        with torch.no_grad():
            scores[twin.mamba_backend] = twin.score_next(histories)
    a, b = (torch.cat([w.flatten().double() for w in weights[k].values()])
            for k in ("mambapy", "triton"))
    return {**res, "weights_rel_diff": float((a - b).norm() / a.norm()),
            "loaded_scores_rel_diff": rel(scores["triton"], scores["mambapy"])}


if __name__ == "__main__":
    if os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("run with TRITON_INTERPRET=1 (Triton's interpreter, for CPU tensors)")
    mode, arg, out = sys.argv[1:4]
    result = ([compare(case) for case in json.loads(arg)] if mode == "kernels"
              else trainer(arg, Path(out).parent / "runs"))
    Path(out).write_text(json.dumps(result, indent=1))
