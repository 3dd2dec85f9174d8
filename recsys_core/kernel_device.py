"""Where the project's Triton kernels run: on CUDA tensors, or on the CPU under Triton's
interpreter (TRITON_INTERPRET=1 in the environment before a kernel is defined), as the tests
run them (selective_scan.py, gru_backward.py, rank_counts.py)."""
from __future__ import annotations

import os


def kernels_run_on(device_type: str) -> bool:
    return device_type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"
