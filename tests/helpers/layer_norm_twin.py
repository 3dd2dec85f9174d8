"""Under Triton's interpreter (TRITON_INTERPRET=1, set before the kernels are built), on the CPU:
`kernel CASES OUT` compares models/fused_layer_norm.py's forward and backward with torch's
LayerNorm in fp64; `model OUT` trains one step of a small SASRec (the paper's block, as the
Beauty cell) and one of BERT4Rec with their LayerNorms fused against the same models with
torch's. Writes JSON to OUT."""
import torch
import torch.nn.functional as F

from recsys_core.models.fused_layer_norm import FusedLayerNorm, fuse_layer_norms, layer_norm
from tests.helpers.interpreter import main


def relative(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours.double() - ref).abs().max() / ref.abs().max().clamp(min=1e-12))


def kernel(cases: list[dict]) -> list[dict]:
    out = []
    for c in cases:
        g = torch.Generator().manual_seed(c["seed"])
        dtype = getattr(torch, c["dtype"])
        x = (torch.randn(*c["shape"], generator=g) * 3 + 1).to(dtype)
        n = c["shape"][-1]
        w, b = torch.randn(n, generator=g), torch.randn(n, generator=g)
        dy = torch.randn(*c["shape"], generator=g).to(dtype)
        leaves = [t.clone().requires_grad_() for t in (x, w, b)]
        y = layer_norm(*leaves, c["eps"])
        y.backward(dy)
        refs = [t.double().requires_grad_() for t in (x, w, b)]
        y_ref = F.layer_norm(refs[0], (n,), refs[1], refs[2], c["eps"])
        y_ref.backward(dy.double())
        out.append({"dtypes": [str(y.dtype), str(leaves[0].grad.dtype)],
                    "y": relative(y, y_ref),
                    **{f"d{name}": relative(t.grad, r.grad)
                       for name, t, r in zip("xwb", leaves, refs)}})
    return out


def model() -> dict:
    from recsys_core.models import build_model
    from recsys_core.train import TrainConfig
    out = {}
    for name in ("sasrec", "bert4rec"):
        cfg = TrainConfig(model=name, dataset="synthetic", max_len=9, embedding_dim=16,
                          num_heads=2, num_blocks=2, dropout=0.0, sasrec_block="original",
                          device="cpu")
        runs = {}
        for fused in (False, True):
            torch.manual_seed(0)
            m = build_model(name, 30, cfg, "cpu")
            count = fuse_layer_norms(m) if fused else 0
            ids = torch.randint(1, 31, (5, 9), generator=torch.Generator().manual_seed(1))
            ids[0, :4] = 0                                              # left padding
            targets = torch.randint(1, 31, (5, 9), generator=torch.Generator().manual_seed(2))
            loss = m(ids, targets, None)
            loss.backward()
            runs[fused] = {"count": count, "loss": loss.item(), "state": sorted(m.state_dict()),
                           "fused": sum(isinstance(x, FusedLayerNorm) for x in m.modules()),
                           "grads": {k: p.grad for k, p in m.named_parameters()}}
        ref, ours = runs[False], runs[True]
        out[name] = {"count": ours["count"], "fused": ours["fused"],
                     "loss": [ref["loss"], ours["loss"]],
                     "same_state": ours["state"] == ref["state"],
                     "max_grad_diff": max(relative(ours["grads"][k], ref["grads"][k].double())
                                          for k in ref["grads"])}
    return out


if __name__ == "__main__":
    main(kernel, model)
