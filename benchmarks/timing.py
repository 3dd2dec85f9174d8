"""Timing for every benchmark: wall-clock seconds, with a CUDA device's queued work waited for
at both ends, or the GPU time between two CUDA events."""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable


def sync(device=None) -> None:
    """Waits for the work queued on `device` where it is a CUDA device (else returns at once)."""
    if device is None:
        return
    import torch   # here: launcher_overhead and aggregate_speed time subprocesses alone
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """`with Stopwatch(device) as watch: ...`, then `watch.s`: wall-clock seconds of the block,
    the device's queued work waited for before and after (no device: the wall clock alone)."""

    def __init__(self, device=None):
        self.device = device
        self.s: float | None = None

    def __enter__(self) -> Stopwatch:
        sync(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        sync(self.device)
        self.s = time.perf_counter() - self._start


def timed(fn: Callable[[], Any], device=None) -> tuple[float, Any]:
    """Seconds of fn() as Stopwatch times them, and what fn() returned."""
    with Stopwatch(device) as watch:
        result = fn()
    return watch.s, result


def median_s(fn: Callable[[], Any], device, repeats: int, warmup: int = 0) -> float:
    """Median seconds of fn() over `repeats` calls after `warmup` untimed ones: on a CUDA device
    the GPU time between CUDA events recorded around the call, elsewhere the wall clock."""
    import torch
    cuda = torch.device(device).type == "cuda"
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if not cuda:
            times.append(timed(fn, device)[0])
            continue
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def profiled(fn: Callable[[], object], device) -> tuple[float, dict[str, list]]:
    """Wall time of fn() under torch.profiler, and CUDA kernel time (us) and count by name."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    with Stopwatch(device) as wall:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            fn()
            sync(device)   # inside the profile, so that it sees every kernel end
    return wall.s, kernel_times(prof)


def kernel_times(prof) -> dict[str, list]:
    """A finished torch.profiler's CUDA kernels: time (us) and count by name."""
    import torch
    kernels: dict[str, list] = {}
    for ev in prof.events():
        if getattr(ev, "device_type", None) == torch.autograd.DeviceType.CUDA:
            k = kernels.setdefault(ev.name, [0.0, 0])
            k[0] += ev.device_time if hasattr(ev, "device_time") else ev.cuda_time
            k[1] += 1
    return kernels
