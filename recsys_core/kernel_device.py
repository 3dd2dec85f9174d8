"""Where the project's Triton kernels run: on CUDA tensors, or on the CPU under Triton's
interpreter (TRITON_INTERPRET=1 in the environment before a kernel is defined), as the tests
run them (selective_scan.py, gru_backward.py, rank_counts.py); and Triton's one cost per
process, and the compiles of its own kernels, taken off a GPU cell's critical path."""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager


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
    imports (the GIL's work). `jobs`: name → a call that compiles and loads one kernel with the
    specialisation its real call will have, in the order given (the training step's first, the
    evaluation's last: those compile during the first epoch); a kernel's first call waits for
    its own job only. One that fails is recorded, and that kernel's first call compiles it as
    before. `summary` goes into result.json."""

    def __init__(self, jobs: dict, device, after: threading.Thread | None = None):
        # every key set now: result.json may be written while the thread changes a value
        self.summary: dict = {"kernels": list(jobs), "compile_s": None, "failed": None,
                              "waited_s": 0.0}
        self._done: set[str] = set()        # jobs ended; all of them once the thread ends
        self._changed = threading.Condition()
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
        try:
            with torch.cuda.device(device):   # the device's context, not device 0's, on rank > 0
                for name, job in jobs.items():
                    try:
                        job()
                    except Exception as e:   # noqa: BLE001 -- its first real call compiles it
                        failed[name] = f"{type(e).__name__}: {e}"[:300]
                    with self._changed:
                        self._done.add(name)
                        self._changed.notify_all()
        except Exception as e:   # noqa: BLE001 -- no device: each kernel compiles at its call
            failed["device"] = f"{type(e).__name__}: {e}"[:300]
        finally:   # also where the thread failed before a job (a waiter must not hang)
            self.summary["failed"] = failed or None
            self.summary["compile_s"] = round(time.perf_counter() - t0, 3)
            with self._changed:
                self._done.update(jobs)
                self._changed.notify_all()

    def wait(self, name: str | None = None) -> None:
        """Until the job `name` has ended (None: every job); not while this thread captures a
        CUDA graph (its kernels were called, so compiled, before the capture)."""
        if not self._thread.is_alive() or _capture.active == threading.get_ident():
            return
        t0 = time.perf_counter()
        if name is None:
            self._thread.join()
        else:
            with self._changed:     # a name that is no job: until the thread's end
                self._changed.wait_for(lambda: name in self._done or
                                       self._done.issuperset(self.summary["kernels"]))
        self.summary["waited_s"] = round(self.summary["waited_s"] + time.perf_counter() - t0, 3)


_compiling: BackgroundCompile | None = None


def compile_in_background(jobs: dict, device,
                          after: threading.Thread | None = None) -> BackgroundCompile:
    """Start a `BackgroundCompile`; `wait_for_compiles` waits for the latest one."""
    global _compiling
    wait_for_compiles()     # a worker's earlier cell that ended before its kernels' first call
    _compiling = BackgroundCompile(jobs, device, after)
    return _compiling


def wait_for_compiles(name: str | None = None) -> None:
    """Wait for the background compile's job `name` (None: all of them), if it is running:
    before the kernel it compiles is called (two compiles of one kernel would race in Triton's
    caches)."""
    if _compiling is not None:
        _compiling.wait(name)


class _Capture:
    """Loading a kernel's module on the device while another thread captures a CUDA graph
    invalidates the capture: `capturing()` holds the lock that `load_on_device` takes."""

    def __init__(self):
        self.lock = threading.Lock()
        self.active: int | None = None     # the capturing thread's ident


_capture = _Capture()


@contextmanager
def capturing():
    """Around a CUDA graph's capture: no module is loaded from the compile thread meanwhile
    (a load in progress finishes first; the jobs go on compiling)."""
    with _capture.lock:
        _capture.active = threading.get_ident()
        try:
            yield
        finally:
            _capture.active = None


def load_on_device(compiled) -> None:
    """Build a compiled kernel's launcher (a C module Triton compiles and caches) and load its
    binary on the current device: what its first launch would do otherwise; never while a
    graph is being captured."""
    with _capture.lock:
        compiled._init_handles()
