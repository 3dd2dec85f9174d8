"""Where the project's Triton kernels run: on CUDA tensors, or on the CPU under Triton's
interpreter (TRITON_INTERPRET=1 in the environment before a kernel is defined), as the tests
run them (selective_scan.py, gru_backward.py, rank_counts.py); and Triton's one cost per
process, taken off a GPU cell's critical path."""
from __future__ import annotations

import os
import threading


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
