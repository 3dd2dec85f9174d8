"""torch.profiler over a few training steps of process 0 (`profile_steps: N`): where a step's
time goes. It profiles steps [SKIP, SKIP + N) of the first epoch the process trains (after the
capture and the first steps' compiles, which the steady-state epoch time leaves out too) and
writes `profile.txt` to the run's folder: wall time per step, how much of it the GPU was busy,
the NCCL kernels' time and the share of it that overlapped other kernels, then the kernels and
the host-side ops by time. The profiler slows process 0 down (and the others wait for it at
their all-reduces): that epoch's time is not a steady-state figure."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile

SKIP = 20
FILE = "profile.txt"


def busy_us(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end) intervals."""
    total, reached = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reached:
            total += end - max(start, reached)
            reached = end
    return total


def summary(prof, wall_s: float, steps: int, what: str) -> str:
    kernels = [(ev.name, ev.time_range.start, ev.time_range.end) for ev in prof.events()
               if ev.device_type == torch.autograd.DeviceType.CUDA]
    lines = [f"{what}", f"{steps} steps profiled on process 0 (under torch.profiler): "
             f"{1e3 * wall_s / steps:.3f} ms a step (wall)"]
    if kernels:
        every = [(s, e) for _, s, e in kernels]
        nccl = [(s, e) for name, s, e in kernels if "nccl" in name.lower()]
        other = [(s, e) for name, s, e in kernels if "nccl" not in name.lower()]
        busy, comm, compute = busy_us(every), busy_us(nccl), busy_us(other)
        overlap = comm + compute - busy
        lines += [f"GPU busy {busy / 1e3 / steps:.3f} ms a step "
                  f"({100 * busy / 1e6 / max(wall_s, 1e-12):.0f}% of wall), "
                  f"{len(kernels) / steps:.0f} kernels a step",
                  f"NCCL kernels {comm / 1e3 / steps:.3f} ms a step, "
                  f"{100 * overlap / max(comm, 1e-12):.0f}% of it overlapped with other kernels",
                  "", "kernels by time (ms a step, count a step, name):"]
        by_name: dict[str, list[float]] = {}
        for name, s, e in kernels:
            entry = by_name.setdefault(name, [0.0, 0])
            entry[0] += e - s
            entry[1] += 1
        for name, (us, n) in sorted(by_name.items(), key=lambda kv: -kv[1][0])[:15]:
            lines.append(f"  {us / 1e3 / steps:8.3f} {n / steps:6.1f}  {name[:120]}")
    else:
        lines.append("no GPU kernels recorded")
    lines += ["", "host-side ops by self CPU time (all steps):",
              prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)]
    return "\n".join(lines) + "\n"


class StepProfile:
    """`at(i, total, describe)` before step i of an epoch of `total` steps, and once more with
    i == total after its last: starts and stops the profiler around the profiled steps."""

    def __init__(self, steps: int, rank: int, device: torch.device, out: str):
        self.left = steps if rank == 0 else 0
        self.device, self.out = device, Path(out)
        self.prof = None
        self.t0 = 0.0
        self.span = (0, 0)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def at(self, i: int, total: int, describe: Callable[[], str]) -> None:
        if self.left <= 0:
            return
        if self.prof is None and i == min(SKIP, max(total - self.left, 0)):
            self.span = (i, min(i + self.left, total))
            activities = [ProfilerActivity.CPU] + \
                ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
            self._sync()
            self.prof = profile(activities=activities)
            self.prof.start()
            self.t0 = time.perf_counter()
        elif self.prof is not None and i == self.span[1]:
            self._sync()
            wall = time.perf_counter() - self.t0
            self.prof.stop()
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / FILE).write_text(summary(self.prof, wall, i - self.span[0], describe()))
            self.prof, self.left = None, 0
