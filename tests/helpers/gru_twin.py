"""Under Triton's interpreter (TRITON_INTERPRET=1, set before the kernel is built), on the CPU:
`kernel CASES OUT` compares gru_backward's Triton walk with its torch twin; `model OUT`
trains one step of a small GRU4Rec whose layers take the project's backward
(RECSYS_GRU_BACKWARD=triton) against the same model with autograd's. Writes JSON to OUT."""
import os

import torch

from recsys_core.models.gru_backward import BACKWARD_ENV, walk_torch, walk_triton
from tests.helpers.interpreter import main


def kernel(cases: list[dict]) -> list[float]:
    diffs = []
    for c in cases:
        g = torch.Generator().manual_seed(c["seed"])
        b, t, h = c["rows"], c["L"], c["H"]
        dout, h_prev = torch.randn(b, t, h, generator=g), torch.randn(b, t, h, generator=g)
        gi, gh = torch.randn(b, t, 3 * h, generator=g), torch.randn(b, t, 3 * h, generator=g)
        w = torch.randn(3 * h, h, generator=g) / h ** 0.5
        ref = torch.cat(walk_torch(dout, gi, gh, h_prev, w), -1)
        ours = torch.cat(walk_triton(dout, gi, gh, h_prev, w), -1)
        diffs.append(float((ours - ref).abs().max() / ref.abs().max()))
    return diffs


def model() -> dict:
    from recsys_core.models.gru4rec import GRU4Rec
    out = {}
    for backward in ("cudnn", "triton"):
        os.environ[BACKWARD_ENV] = backward
        torch.manual_seed(0)
        m = GRU4Rec(n_items=30, embedding_dim=16, num_blocks=2, dropout=0.3, rnn_dropout="torch")
        ids = torch.randint(0, 31, (5, 9), generator=torch.Generator().manual_seed(1))
        ids[0, :4] = 0                                              # left padding
        targets = torch.randint(1, 31, (5, 9), generator=torch.Generator().manual_seed(2))
        torch.manual_seed(3)                                        # the same dropout masks
        loss = m(ids, targets, None)
        loss.backward()
        out[backward] = {"loss": loss.item(), "own": m.own_backward,
                         "grads": {n: p.grad.flatten().tolist() for n, p in m.named_parameters()
                                   if p.grad is not None}}
    ref, ours = out["cudnn"], out["triton"]
    return {"own": [ref["own"], ours["own"]], "loss": [ref["loss"], ours["loss"]],
            "grads": sorted(ours["grads"]) == sorted(ref["grads"]),
            "max_diff": max(max(abs(a - b) for a, b in zip(ref["grads"][k], ours["grads"][k]))
                            / max(max(map(abs, ref["grads"][k])), 1e-12) for k in ref["grads"])}


if __name__ == "__main__":
    main(kernel, model)
