"""GPU telemetry through NVML (pynvml): memory used, utilisation, power; plus torch's peak
allocation. On a machine without an NVIDIA driver every field is None, never an error."""
from __future__ import annotations

import statistics
import threading

import torch

FIELDS = ("gpu_mem_used_mb", "gpu_util_pct", "gpu_power_w", "peak_gpu_mem_mb")


class GpuTelemetry:
    def __init__(self, device: torch.device):
        self.device = device
        self.handle = None
        if device.type != "cuda":
            return
        # torch's peak is the process's: a worker runs cell after cell, and without this a
        # small cell recorded the peak of a big one before it (the launcher plans GPU memory
        # from these peaks: launcher/executors/memory.py)
        torch.cuda.reset_peak_memory_stats(device)
        try:
            import pynvml
            pynvml.nvmlInit()
            index = device.index if device.index is not None else torch.cuda.current_device()
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self.nvml = pynvml
        except Exception:  # NVMLError_LibraryNotFound, driver mismatch, ...: no telemetry
            self.handle = None

    def read(self) -> dict:
        out = dict.fromkeys(FIELDS)
        if self.device.type == "cuda":
            out["peak_gpu_mem_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        out.update(self.read_nvml())
        return out

    def read_nvml(self) -> dict:
        """NVML's fields of FIELDS as they are now; {} without NVML."""
        out = {}
        if self.handle is None:
            return out
        try:
            mem = self.nvml.nvmlDeviceGetMemoryInfo(self.handle)
            out["gpu_mem_used_mb"] = mem.used / 2**20
            out["gpu_util_pct"] = float(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)
            out["gpu_power_w"] = self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0
        except Exception:
            pass
        return out

    def sampler(self, period_s: float = 0.01) -> Sampler:
        """`with telemetry.sampler() as s: ...`: read_nvml() every period_s in a background
        thread while the block runs, then e.g. s.mean("gpu_util_pct"); without NVML nothing is
        read. NVML only: the thread makes no CUDA call into the process it watches."""
        return Sampler(self, period_s)

    @staticmethod
    def device_name(device: torch.device) -> str:
        if device.type == "cuda":
            return torch.cuda.get_device_name(device)
        import platform
        return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


class Sampler:
    """The readings of a GpuTelemetry taken in a background thread; see GpuTelemetry.sampler."""

    def __init__(self, telemetry: GpuTelemetry, period_s: float):
        self.telemetry, self.period_s = telemetry, period_s
        self.readings: list[dict] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        if self.telemetry.handle is not None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.readings.append(self.telemetry.read_nvml())
            self._stop.wait(self.period_s)

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def mean(self, field: str) -> float | None:
        """Mean of `field` over the readings that have it; None where none has."""
        values = [r[field] for r in self.readings if r.get(field) is not None]
        return float(statistics.mean(values)) if values else None
