"""GPU telemetry through NVML (pynvml): memory used, utilisation, power; plus torch's peak
allocation. On a machine without an NVIDIA driver every field is None, never an error."""
from __future__ import annotations

import torch

FIELDS = ("gpu_mem_used_mb", "gpu_util_pct", "gpu_power_w", "peak_gpu_mem_mb")


class GpuTelemetry:
    def __init__(self, device: torch.device):
        self.device = device
        self.handle = None
        if device.type != "cuda":
            return
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

    @staticmethod
    def device_name(device: torch.device) -> str:
        if device.type == "cuda":
            return torch.cuda.get_device_name(device)
        import platform
        return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
