"""What capturing a training step in a CUDA graph needs around it: the weights and optimiser
state saved before the warm-up steps and put back after the capture (so the graph trains from
exactly the state the eager loop would have), and the CUDA generator reset after a capture
that failed half-way."""
from __future__ import annotations

import torch


def capture_state(params: list[torch.Tensor], optimizer: torch.optim.Optimizer):
    """Copies of the parameters and of the optimiser's per-parameter state."""
    saved_params = [p.detach().clone() for p in params]
    state = {p: {k: (v.clone() if torch.is_tensor(v) else v) for k, v in optimizer.state[p].items()}
             for p in params if p in optimizer.state and optimizer.state[p]}
    return saved_params, state


@torch.no_grad()
def restore_state(params: list[torch.Tensor], optimizer: torch.optim.Optimizer, saved) -> None:
    """Put `capture_state`'s copies back, in place (the graph holds these tensors' addresses)."""
    saved_params, state = saved
    for p, value in zip(params, saved_params):
        p.copy_(value)
    for p in params:
        now = optimizer.state.get(p)
        if not now:
            continue
        before = state.get(p)
        for k, v in now.items():
            if not torch.is_tensor(v):
                continue
            if before is not None:
                v.copy_(before[k])
            else:   # no state before the warm-up: a fresh one (step 0, zero moments)
                v.zero_()


def reset_rng_capture_state(device) -> None:
    """A capture that failed half-way leaves the CUDA generator counting offsets for a graph
    that never ended; the next random op outside a capture then fails ("Offset increment
    outside graph capture"). One small capture that ends normally resets that state."""
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            torch.rand(1, device=device)
        torch.cuda.synchronize(device)
    except Exception:  # noqa: BLE001 -- nothing more to do; the eager step will say why
        pass
