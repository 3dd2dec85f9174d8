"""Where the project's Triton kernels run: on CUDA tensors, or on the CPU under Triton's
interpreter (TRITON_INTERPRET=1 in the environment before a kernel is defined), as the tests
run them (selective_scan.py, gru_backward.py, rank_counts.py); and Triton's one cost per
process, and the compiles of its own kernels, taken off a GPU cell's critical path."""
from __future__ import annotations

import os
import threading
import time


def kernels_run_on(device_type: str) -> bool:
    return device_type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def hash_triton_in_background() -> threading.Thread | None:
    """Start computing Triton's cache key in a thread; the thread, or None without Triton.

    Triton keys every kernel it compiles or finds in its cache on a hash of its own files,
    libtriton's 500 MB included, computed once per process at its first kernel (the fused
    loss, the evaluation's rank counts): 0.4-0.7 s on an H100 host, warm caches or not.
    Reading and hashing run without the GIL, so beside the run's setup (imports, data, model:
    the GIL's work) it costs 0.15-0.26 s of it (results/benchmarks/triton_key/). Triton keeps
    the key (lru_cache); if the thread fails or has not finished, the first kernel computes it
    as before."""
    try:
        from triton.runtime.cache import triton_key
    except ImportError:      # no Triton (a CPU install), or one keyed otherwise
        return None

    def key() -> None:
        try:
            triton_key()
        except Exception:    # noqa: BLE001 -- the first kernel computes it again and says why
            pass

    thread = threading.Thread(target=key, name="triton-key", daemon=True)
    thread.start()
    return thread


class BackgroundCompile:
    """The run's Triton kernels compiled (or found in Triton's cache) and loaded on its device
    in a thread, while the main thread sets the run up.

    On an empty Triton cache the first call of the fused loss took 1.30 s and of the rank
    counts 0.43 s on an H100, against 0.35 and 0.006 s on a full one (results/benchmarks/
    triton_cold/): most of a cold cell's extra second. Their compilers (ptxas; the C compiler
    of each kernel's launcher) are other processes, so part of it runs beside the setup's
    imports (the GIL's work). `jobs`: name → a call that compiles and loads one
    kernel with the specialisation its real call will have; one that fails is recorded, and
    that kernel's first call compiles it as before. `summary` goes into result.json."""

    def __init__(self, jobs: dict, device, after: threading.Thread | None = None):
        # every key set now: result.json may be written while the thread changes a value
        self.summary: dict = {"kernels": list(jobs), "compile_s": None, "failed": None,
                              "waited_s": 0.0}
        import torch
        # "cuda" means the caller's current device; in a new thread that would be device 0
        index = device.index if device.index is not None else torch.cuda.current_device()
        self._thread = threading.Thread(target=self._compile, args=(jobs, index, after),
                                        name="triton-compile", daemon=True)
        self._thread.start()

    def _compile(self, jobs: dict, device: int, after: threading.Thread | None) -> None:
        import torch
        if after is not None:       # Triton's key (hash_triton_in_background): hashed once
            after.join()
        t0 = time.perf_counter()
        failed = {}
        with torch.cuda.device(device):   # the device's context, not device 0's, on a rank > 0
            for name, job in jobs.items():
                try:
                    job()
                except Exception as e:   # noqa: BLE001 -- the first real call compiles it again
                    failed[name] = f"{type(e).__name__}: {e}"[:300]
        self.summary["failed"] = failed or None
        self.summary["compile_s"] = round(time.perf_counter() - t0, 3)

    def wait(self) -> None:
        if not self._thread.is_alive():
            return
        t0 = time.perf_counter()
        self._thread.join()
        self.summary["waited_s"] = round(self.summary["waited_s"] + time.perf_counter() - t0, 3)


_compiling: BackgroundCompile | None = None


def compile_in_background(jobs: dict, device,
                          after: threading.Thread | None = None) -> BackgroundCompile:
    """Start a `BackgroundCompile`; `wait_for_compiles` waits for the latest one."""
    global _compiling
    wait_for_compiles()     # a worker's earlier cell that ended before its kernels' first call
    _compiling = BackgroundCompile(jobs, device, after)
    return _compiling


def wait_for_compiles() -> None:
    """Wait for the background compile, if one is running: before a kernel it compiles is
    called (two compiles of one kernel would race in Triton's caches), and before a CUDA graph
    is captured (loading a module on the device while another thread captures invalidates the
    capture)."""
    if _compiling is not None:
        _compiling.wait()


def load_on_device(compiled) -> None:
    """Build a compiled kernel's launcher (a C module Triton compiles and caches) and load its
    binary on the current device: what its first launch would do otherwise."""
    compiled._init_handles()
