"""Under Triton's interpreter (TRITON_INTERPRET=1): metrics.ranks through rank_counts' kernel
against its torch counts, on blocks with ties, NaNs, ±inf, a history to exclude and columns
past n_valid, in fp32 and bf16, with rows of a wider block (a stride). Writes JSON to OUT."""
import json
import sys

import torch

from recsys_core.metrics import ranks
from recsys_core.rank_counts import kernel_fits


def case(seed: int, dtype, b=37, v=2100, n_valid=2090):
    g = torch.Generator().manual_seed(seed)
    wide = torch.randint(0, 5, (b, v + 3), generator=g).float()            # many ties
    u = torch.rand(b, v + 3, generator=g)
    wide[u < 0.05] = float("nan")
    wide[(u > 0.05) & (u < 0.08)] = float("-inf")
    wide[u > 0.97] = float("inf")
    scores = wide.to(dtype)[:, :v]                                         # row stride v + 3
    targets = torch.randint(1, n_valid, (b,), generator=g)
    history = torch.randint(0, v, (b, 11), generator=g)
    assert kernel_fits(scores)
    out = {}
    for label, kw in (("history", dict(history=history, n_valid=n_valid)), ("plain", {})):
        r_k, n_k = ranks(scores, targets, host_read=False, **kw)
        r_t, n_t = ranks(scores, targets, host_read=True, **kw)
        out[label] = bool(torch.equal(r_k, r_t) and torch.equal(n_k, n_t))
        out[f"{label}_nans"] = int(n_k.sum())
    return out


if __name__ == "__main__":
    results = [case(s, d) for s, d in ((0, torch.float32), (1, torch.bfloat16))]
    with open(sys.argv[-1], "w") as f:
        json.dump(results, f)
