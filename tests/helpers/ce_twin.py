"""Under Triton's interpreter (TRITON_INTERPRET=1): fused_ce.linear_cross_entropy's loss and
gradients against torch's cross-entropy over the same logits, fp32, for an item table of
exactly n_valid rows (SASRec's) and one with a row after them and an output bias (BERT4Rec's
mask token and head bias), with rows of no target; and in bf16 (the GPU's dtype) against
torch's loss over the same bf16 logits. Writes JSON to OUT."""
import json
import sys

import torch
import torch.nn.functional as F

from recsys_core.train.fused_ce import linear_cross_entropy


def case(seed: int, extra_rows: int, with_bias: bool, dtype=torch.float32, n=23, d=16,
         n_valid=301):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, d, generator=g, requires_grad=True)
    weight = torch.randn(n_valid + extra_rows, d, generator=g, requires_grad=True)
    bias = torch.randn(n_valid, generator=g, requires_grad=True) if with_bias else None
    targets = torch.randint(1, n_valid, (n,), generator=g)
    targets[::4] = 0                                    # positions without a target
    fused = linear_cross_entropy(hidden, weight, bias, targets, n_valid, dtype)
    fused.backward()
    got = [t.grad.clone() for t in (hidden, weight, bias) if t is not None]
    for t in (hidden, weight, bias):
        if t is not None:
            t.grad = None
    logits = (hidden.to(dtype) @ weight[:n_valid].to(dtype).T).float()
    if bias is not None:
        logits = logits + bias.to(dtype).float()
    ref = F.cross_entropy(logits, targets, ignore_index=0, reduction="sum") / (targets != 0).sum()
    ref.backward()
    want = [t.grad for t in (hidden, weight, bias) if t is not None]
    return {"dtype": str(dtype), "loss": abs(float(fused.detach()) - float(ref.detach())),
            "grads": max(float((a - b).abs().max()) for a, b in zip(got, want)),
            "shapes": all(a.shape == b.shape for a, b in zip(got, want)),
            "extra_rows_grad": float(got[1][n_valid:].abs().sum()) if extra_rows else 0.0}


if __name__ == "__main__":
    results = [case(0, 0, False), case(1, 1, True), case(2, 9, False),
               case(3, 1, True, torch.bfloat16)]
    with open(sys.argv[-1], "w") as f:
        json.dump(results, f)
