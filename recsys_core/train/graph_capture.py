"""What capturing a training step in a CUDA graph needs around it: the weights and optimiser
state saved before the warm-up steps and put back after the capture (so the graph trains from
exactly the state the eager loop would have), the CUDA generator reset after a capture
that failed half-way, and, for a step with NCCL all-reduces in it, the process group's settings."""
from __future__ import annotations

from collections.abc import Mapping

import torch

# PyTorch's recipe for collectives in a CUDA graph (CUDA semantics notes, "Usage with
# DistributedDataParallel", NCCL >= 2.9.6): the async error handling off, set before the
# process group starts (setup.make_accelerator). Blocking wait would sync the host inside the
# capture; the flight recorder (which queries collectives' events when it dumps) is turned off
# as a precaution.
NCCL_GRAPH_ENV = {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "0", "NCCL_ASYNC_ERROR_HANDLING": "0",
                  "TORCH_NCCL_BLOCKING_WAIT": "0", "TORCH_NCCL_TRACE_BUFFER_SIZE": "0"}
# what a multi-process result records of the environment its process group started with
NCCL_ENV_RECORDED = (*NCCL_GRAPH_ENV, "NCCL_BLOCKING_WAIT", "TORCH_NCCL_ENABLE_MONITORING",
                     "NCCL_NVLS_ENABLE", "NCCL_ALGO", "NCCL_PROTO")
MIN_NCCL = (2, 9, 6)


def nccl_capture_unsupported_reason(backend: str, nccl_version: tuple | None,
                                    env: Mapping[str, str]) -> str | None:
    """None where a step with this process group's all-reduces can be captured, else why not."""
    if "nccl" not in str(backend):      # "nccl", or e.g. "cpu:gloo,cuda:nccl"
        return f"process group backend {backend}, not nccl"
    if nccl_version is None or tuple(nccl_version)[:3] < MIN_NCCL:
        return f"NCCL {nccl_version} cannot capture collectives (needs >= 2.9.6)"
    if env.get("TORCH_NCCL_ASYNC_ERROR_HANDLING") != "0":
        return (f"TORCH_NCCL_ASYNC_ERROR_HANDLING={env.get('TORCH_NCCL_ASYNC_ERROR_HANDLING')} "
                "when the process group started (needs 0: set by setup.make_accelerator)")
    blocking = [k for k in ("TORCH_NCCL_BLOCKING_WAIT", "NCCL_BLOCKING_WAIT")
                if env.get(k, "0").lower() not in ("0", "false")]
    if blocking:
        return f"{blocking[0]}={env[blocking[0]]} (a blocking wait syncs inside the capture)"
    return None


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
