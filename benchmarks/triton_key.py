"""Triton's per-process cache key, on the critical path or in a thread beside an import.

    python -m benchmarks.triton_key [--repeat 3] [--out results/benchmarks/triton_key]

Triton hashes its own files (libtriton's 500 MB included) once per process, at the first
kernel it compiles or loads. `serial`: that hash, then `import torch._dynamo` (what the
optimiser's constructor imports during a cell's setup). `thread`: the hash in a thread
(recsys_core/kernel_device.hash_triton_in_background) while the main thread imports. Each row
is a fresh process, the two kinds alternating; `total_s` is from the first of the two to the
end of both.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from benchmarks.report import fresh_process_row, write

KINDS = ("serial", "thread")


def measure(kind: str) -> dict:
    """One row, in this (fresh) process."""
    import threading
    import time

    import torch
    import triton  # noqa: F401 -- imported before the clock, as in a cell
    from triton.runtime.cache import triton_key
    t0 = time.perf_counter()
    if kind == "thread":
        thread = threading.Thread(target=triton_key)
        thread.start()
        import torch._dynamo  # noqa: F401
        imported = time.perf_counter()
        thread.join()
        waited = time.perf_counter() - imported
        key_s = None
    else:
        triton_key()
        key_s = time.perf_counter() - t0
        import torch._dynamo  # noqa: F401
        waited = 0.0
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {"device": device, "kind": kind, "key_s": key_s, "waited_for_key_s": waited,
            "total_s": time.perf_counter() - t0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", default="results/benchmarks/triton_key")
    p.add_argument("--row", choices=KINDS, help=argparse.SUPPRESS)   # one row, in this process
    args = p.parse_args(argv)
    if args.row:
        import json
        print(json.dumps(measure(args.row)))
        return 0
    rows = [fresh_process_row("benchmarks.triton_key", "--row", kind)
            for _ in range(args.repeat) for kind in KINDS]
    table = pd.DataFrame(rows)
    medians = table.groupby("kind")["total_s"].median()
    write(Path(args.out), "triton_key",
          f"# Triton's cache key: serial or in a thread\n\n`python -m benchmarks.triton_key "
          f"--repeat {args.repeat}`: one fresh process a row. Median total: serial "
          f"{medians['serial']:.2f} s, thread {medians['thread']:.2f} s.", table, data=table)
    print(table.to_string(index=False), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
