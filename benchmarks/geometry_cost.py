"""What the geometry measures every result records (train/recorded.py → analysis/geometry.py's
`measures`) cost at the end of a cell, at Amazon Beauty's shape (54,542 items × 64), per part:
the spectrum (the D × D covariance's eigenvalues), the SVD of the whole table it replaced (a
reference, with the largest difference of their eigenvalues relative to the largest), the
cosine k-NN (k 10) on the run's device, anisotropy, hubness, and `measures` as a cell calls it.
The table is random (the cost does not depend on its values); each time is the median of
--repeat calls after one untimed call.

    python -m benchmarks.geometry_cost [--device cuda] [--name geometry_cost_cpu]
"""
from __future__ import annotations

import argparse
import platform
import statistics

import numpy as np
import pandas as pd
import torch

from benchmarks.report import write
from benchmarks.timing import timed
from recsys_core.analysis import geometry

ITEMS, DIM, K = 54542, 64, 10


def median_s(fn, device: str, repeat: int) -> float:
    """Median wall-clock seconds (host and device work alike) after one untimed call."""
    fn()
    return statistics.median(timed(fn, device)[0] for _ in range(repeat))


def svd_spectrum(emb: np.ndarray) -> np.ndarray:
    centred = emb - emb.mean(0)
    return np.linalg.svd(centred, compute_uv=False) ** 2 / (len(emb) - 1)


def machine(device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(torch.device(device))}, torch {torch.__version__}"
    return (f"{platform.node()}: {platform.processor() or platform.machine()}, "
            f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, "
            f"numpy {np.__version__}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default="results/benchmarks/geometry_cost")
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    emb = (rng.standard_normal((ITEMS, DIM)) @ rng.standard_normal((DIM, DIM)) * 0.05
           ).astype(np.float32)
    knn = geometry.cosine_knn(emb, K, device=args.device)
    parts = {
        "spectrum (covariance eigvalsh)": lambda: geometry.spectrum(emb),
        "spectrum by SVD of the table (before)": lambda: svd_spectrum(emb),
        f"cosine k-NN, k {K}": lambda: geometry.cosine_knn(emb, K, device=args.device),
        "anisotropy": lambda: geometry.anisotropy(emb),
        "hubness": lambda: geometry.hubness(knn, ITEMS),
        "measures (what a cell pays)": lambda: geometry.measures(emb, K, device=args.device),
    }
    rows = [{"part": name, "seconds": median_s(fn, args.device, args.repeat)}
            for name, fn in parts.items()]
    eig, reference = geometry.spectrum(emb), svd_spectrum(emb)
    agree = float(np.abs(eig - reference).max() / reference[0])
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    name = args.name or f"geometry_cost_{args.device.split(':')[0]}"
    write(args.out, name, f"# Geometry measures at Amazon Beauty's shape ({ITEMS} × {DIM}), "
          f"device {args.device}", f"Machine: {machine(args.device)}. Median of {args.repeat} "
          "calls after one untimed call. Eigenvalues of the two spectra: largest difference "
          f"{agree:.1e} of the largest eigenvalue.", table, data=table)


if __name__ == "__main__":
    main()
