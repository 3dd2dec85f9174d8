"""What the GPU epoch benchmark measures besides epochs: the device's bf16 matmul rate and copy
bandwidth (the floor it compares epochs with), and torch.profiler summaries of one training
epoch and one evaluation (kernel time by name)."""
from __future__ import annotations

import torch

from benchmarks.run_setup import Run, evaluator, train
from benchmarks.timing import median_s, profiled


def matmul_rate(device, n: int = 8192, repeats: int = 20) -> float:
    """FLOP/s of an n^3 bf16 matrix product on random data (CPU: fp32, smaller), median."""
    cuda = torch.device(device).type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    n = n if cuda else 512
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n ** 3 / median_s(lambda: a @ b, device, repeats, warmup=3)


def copy_bandwidth(device, mb: int = 1024, repeats: int = 10) -> float | None:
    """Bytes/s of a device-to-device copy, counting bytes read plus written (median)."""
    if torch.device(device).type != "cuda":
        return None
    x = torch.empty(mb * 2**20, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    return 2 * x.numel() / median_s(lambda: y.copy_(x), device, repeats, warmup=2)


def profile_epoch(run: Run, epoch: int) -> str:
    """torch.profiler over one epoch: kernel time by name (top 12) and the GPU-busy share."""
    wall, kernels = profiled(lambda: train(run, epoch), run.accelerator.device)
    total = sum(v[0] for v in kernels.values()) / 1e6
    lines = [f"profile {run.cfg.dataset} {run.cfg.model} ({run.train_step.describe()}): wall "
             f"{wall:.4f} s (profiled), GPU kernel time {total:.4f} s "
             f"({100 * total / max(wall, 1e-9):.0f}% of wall), "
             f"{sum(v[1] for v in kernels.values())} kernels"]
    for name, (us, n) in sorted(kernels.items(), key=lambda kv: -kv[1][0])[:12]:
        lines.append(f"  {us / 1e6:8.4f} s {100 * us / 1e6 / max(total, 1e-12):5.1f}% "
                     f"x{n:<6d} {name[:110]}")
    return "\n".join(lines)


def profile_eval(run: Run) -> str:
    """torch.profiler over one evaluation of all users in one batch: wall vs kernel time."""
    evaluate = evaluator(run, max(run.split.n_users, 1))
    evaluate()
    wall, kernels = profiled(evaluate, run.accelerator.device)
    total = sum(v[0] for v in kernels.values()) / 1e6
    lines = [f"eval profile {run.cfg.model} (all users, one batch): wall {wall:.4f} s "
             f"(profiled), GPU kernel time {total:.4f} s, "
             f"{sum(v[1] for v in kernels.values())} kernels"]
    for name, (us, n) in sorted(kernels.items(), key=lambda kv: -kv[1][0])[:6]:
        lines.append(f"  {us / 1e6:8.4f} s x{n:<5d} {name[:110]}")
    return "\n".join(lines)
