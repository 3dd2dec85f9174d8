"""How a model uses its item-embedding space (RQ4), for one run or several (models, seeds).

Per run, on the item embeddings E [n_items, D] (no padding or [mask] row):
- spectrum: eigenvalues of E's covariance, largest first; cumulative explained variance and
  the dimensions needed for 90% of it (PCA-90%);
- participation ratio (sum λ)² / sum λ²: the effective number of dimensions in use;
- hubness at k: N_k(i) = how often item i is among the k cosine nearest neighbours of the
  others; its skewness and Gini (a few hubs in every list → both high);
- anisotropy: the mean cosine over all pairs of distinct items (0 isotropic, → 1 a cone);
- t-SNE (cosine) of the embeddings.
Per pair of runs on the same items: linear CKA (invariant to rotation and scale) and the mean
overlap of the items' k-NN lists (neighbourhood stability across seeds or models).
The trainer records `measures()`'s row in every result (`geometry_*`, train/recorded.py), so
the per-run measures need no checkpoint; the pairs and the figure do.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_core.analysis import gini, item_embeddings, load_run
from recsys_core.render import write_table


def spectrum(emb: np.ndarray) -> np.ndarray:
    """Eigenvalues of the covariance of emb's rows, descending: those of the D × D matrix in
    float64, 4× faster than the SVD of the table (benchmarks/geometry_cost.py). An unused
    direction's eigenvalue is rounding noise (~1e-16 of the largest), clipped at 0."""
    centred = np.asarray(emb, dtype=np.float64)
    centred = centred - centred.mean(0)
    eig = np.linalg.eigvalsh(centred.T @ centred)[::-1]
    return np.maximum(eig, 0.0) / max(len(emb) - 1, 1)


def explained(eigenvalues: np.ndarray) -> np.ndarray:
    return np.cumsum(eigenvalues) / eigenvalues.sum()


def dims_for(eigenvalues: np.ndarray, share: float = 0.9) -> int:
    return int(np.searchsorted(explained(eigenvalues), share - 1e-12) + 1)


def participation_ratio(eigenvalues: np.ndarray) -> float:
    return float(eigenvalues.sum() ** 2 / (eigenvalues ** 2).sum())


def _unit(emb: np.ndarray) -> np.ndarray:
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def anisotropy(emb: np.ndarray) -> float:
    """Mean cosine over the n(n-1) ordered pairs of distinct rows, in O(n·D)."""
    u, n = _unit(emb), len(emb)
    total = np.square(u.sum(0)).sum() - np.square(u).sum()
    return float(total / (n * (n - 1)))


def cosine_knn(emb: np.ndarray, k: int, block: int = 2048, device: str = "cpu") -> np.ndarray:
    """[n, k] indices of each row's k most cosine-similar other rows, most similar first
    (blocks of rows, so a catalogue of 50,000 items never holds an n × n matrix). On the GPU:
    amazon-beauty's 54,542 items took ~30 s a run with numpy's argpartition on 2 cores."""
    import torch
    u = torch.from_numpy(_unit(emb)).to(device)
    k = min(k, len(u) - 1)
    out = np.empty((len(u), k), dtype=np.int64)
    for start in range(0, len(u), block):
        sim = u[start:start + block] @ u.T
        rows = torch.arange(sim.shape[0], device=sim.device)
        sim[rows, rows + start] = -torch.inf
        out[start:start + block] = sim.topk(k, dim=1).indices.cpu().numpy()
    return out


def k_occurrence(knn: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(knn.ravel(), minlength=n)


def skewness(x: np.ndarray) -> float:
    """The sample skewness m3 / m2^1.5 (scipy.stats.skew's default, without importing
    scipy.stats: 1.2 s of a cold cell's end on the H200); 0 when all values are equal."""
    d = np.asarray(x, dtype=np.float64)
    d = d - d.mean()
    m2 = float(np.mean(d * d))
    return float(np.mean(d ** 3)) / m2 ** 1.5 if m2 > 0 else 0.0


def hubness(knn: np.ndarray, n: int) -> dict:
    counts = k_occurrence(knn, n)
    spread = skewness(counts)       # all equal: no hubs, skew 0
    return {"hub_skewness": spread, "hub_gini": gini(counts),
            "hub_max_k_occurrence": int(counts.max())}


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of two representations of the same rows (Kornblith et al., 2019)."""
    x, y = x - x.mean(0), y - y.mean(0)
    cross = np.linalg.norm(y.T @ x) ** 2
    return float(cross / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def knn_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Mean share of each row's k neighbours that two k-NN lists have in common."""
    shared = (a[:, :, None] == b[:, None, :]).any(2).sum(1)
    return float(shared.mean() / a.shape[1])


def tsne(emb: np.ndarray, perplexity: float = 30.0, iterations: int = 750, seed: int = 0,
         device: str = "cpu") -> np.ndarray:
    """Exact t-SNE (van der Maaten & Hinton, 2008) on cosine distances, [n, 2]; O(n²) per step,
    meant for up to a few thousand points. Early exaggeration 12 for 250 steps, momentum
    0.5 → 0.8, adaptive gains, learning rate max(n / 48, 50) (scikit-learn's 'auto')."""
    import torch
    n = len(emb)
    u = torch.as_tensor(_unit(emb)).to(device)
    dist = (1 - u @ u.T).clamp(min=0)
    p = _affinities(dist, min(perplexity, (n - 1) / 3))
    p = (p + p.T) / (2 * n)
    p = p.clamp(min=1e-12).float()
    gen = torch.Generator().manual_seed(seed)
    y = (torch.randn(n, 2, generator=gen) * 1e-4).to(device)
    update, gains = torch.zeros_like(y), torch.ones_like(y)
    lr = max(n / 48, 50.0)
    eye = torch.eye(n, dtype=torch.bool, device=device)
    for step in range(iterations):
        exaggeration, momentum = (12.0, 0.5) if step < 250 else (1.0, 0.8)
        num = 1 / (1 + torch.cdist(y, y) ** 2)
        num.masked_fill_(eye, 0)
        q = (num / num.sum()).clamp(min=1e-12)
        w = (exaggeration * p - q) * num
        grad = 4 * (w.sum(1, keepdim=True) * y - w @ y)
        same = (grad > 0) == (update > 0)
        gains = torch.where(same, gains * 0.8, gains + 0.2).clamp(min=0.01)
        update = momentum * update - lr * gains * grad
        y = y + update
    return y.cpu().numpy()


def _affinities(dist, perplexity: float, steps: int = 64):
    """Row-conditional Gaussian affinities whose entropy is log(perplexity): a bisection on
    each row's precision, all rows at once."""
    import torch
    n = len(dist)
    target = np.log(perplexity)
    like = dict(dtype=dist.dtype, device=dist.device)
    lo = torch.full((n, 1), 1e-20, **like)
    hi = torch.full((n, 1), 1e20, **like)
    beta = torch.ones(n, 1, **like)
    off = ~torch.eye(n, dtype=torch.bool, device=dist.device)
    for _ in range(steps):
        logits = torch.where(off, -dist * beta, torch.tensor(-torch.inf, **like))
        p = torch.softmax(logits, 1)
        entropy = -(p * torch.log(p.clamp(min=1e-300))).sum(1, keepdim=True)
        too_flat = entropy > target            # too spread out → sharpen (raise beta)
        lo = torch.where(too_flat, beta, lo)
        hi = torch.where(too_flat, hi, beta)
        beta = torch.where(hi >= 1e19, beta * 2, (lo + hi) / 2)
    return p


def measures(emb: np.ndarray, k: int = 10, device: str = "cpu"
             ) -> tuple[dict, np.ndarray, np.ndarray]:
    """The per-run table row, the eigenvalues, and the k-NN lists."""
    eig = spectrum(emb)
    knn = cosine_knn(emb, k, device=device)
    row = {"n_items": len(emb), "dim": emb.shape[1], "dims_90": dims_for(eig, 0.9),
           "participation_ratio": participation_ratio(eig), "anisotropy": anisotropy(emb),
           **hubness(knn, len(emb)), "mean_norm": float(np.linalg.norm(emb, axis=1).mean())}
    return row, eig, knn


def analyse(paths: list[Path], out: Path, k: int = 10, tsne_points: int = 2000,
            tsne_iterations: int = 750, device: str = "cpu") -> pd.DataFrame:
    runs, rows = [], []
    for path in paths:
        run = load_run(path, device)
        emb = item_embeddings(run.model)
        if emb is None:
            print(f"geometry: {path}: {run.cfg.model} has no item embeddings, skipped")
            continue
        row, eig, knn = measures(emb, k, device)
        popularity = run.split.train_item_counts()[1:].cpu().numpy()
        runs.append(dict(run=run, emb=emb, eig=eig, knn=knn, popularity=popularity))
        rows.append({"run": run.label, "model": run.cfg.model, "dataset": run.cfg.dataset,
                     "seed": run.cfg.seed, "path": str(path), **row})
    table = pd.DataFrame(rows)
    write_table(out, "geometry", table)
    pairs = []
    for a, b in itertools.combinations(runs, 2):
        ra, rb = a["run"], b["run"]
        if ra.cfg.dataset != rb.cfg.dataset or len(a["emb"]) != len(b["emb"]):
            continue      # CKA and overlap need the same items
        pairs.append({"run_a": ra.label, "run_b": rb.label, "model_a": ra.cfg.model,
                      "model_b": rb.cfg.model, "same_model": ra.cfg.model == rb.cfg.model,
                      "linear_cka": linear_cka(a["emb"], b["emb"]),
                      f"knn_overlap@{k}": knn_overlap(a["knn"], b["knn"])})
    write_table(out, "geometry_pairs", pd.DataFrame(pairs))
    if runs:
        figure(runs, out / "geometry.png", k, tsne_points, tsne_iterations, device)
    return table


def figure(runs: list[dict], path: Path, k: int, tsne_points: int, tsne_iterations: int,
           device: str = "cpu") -> None:
    """One column per model (its runs overlaid: seeds), one row per measure; hubness and
    t-SNE show the model's first run, t-SNE points coloured by log train popularity."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = list(dict.fromkeys(r["run"].cfg.model for r in runs))
    fig, axes = plt.subplots(4, len(models), figsize=(3.6 * len(models), 13), squeeze=False)
    for col, model in enumerate(models):
        mine = [r for r in runs if r["run"].cfg.model == model]
        ax = axes[:, col]
        for r in mine:
            eig, label = r["eig"], f"seed {r['run'].cfg.seed}"
            ax[0].semilogy(np.arange(1, len(eig) + 1), np.maximum(eig, 1e-12), label=label)
            ax[1].plot(np.arange(1, len(eig) + 1), explained(eig), label=label)
        d90 = dims_for(mine[0]["eig"])
        ax[1].axhline(0.9, color="grey", ls="--", lw=0.8)
        ax[1].axvline(d90, color="grey", ls=":", lw=0.8)
        first = mine[0]
        counts = k_occurrence(first["knn"], len(first["emb"]))
        ax[2].hist(counts, bins=min(50, counts.max() + 1), color="tab:blue")
        ax[2].set_yscale("log")
        rng = np.random.default_rng(0)
        n = len(first["emb"])
        pick = np.sort(rng.choice(n, min(n, tsne_points), replace=False))
        xy = tsne(first["emb"][pick], iterations=tsne_iterations, device=device)
        ax[3].scatter(xy[:, 0], xy[:, 1], s=3, c=np.log1p(first["popularity"][pick]),
                      cmap="viridis")
        ax[0].set(title=f"{model}\neigenvalue spectrum", xlabel="component", ylabel="eigenvalue")
        ax[1].set(title=f"cumulative explained variance\n(90%: {d90} dims)", xlabel="components")
        ax[2].set(title=f"hubness: N_{k} (Gini {gini(counts):.2f})", xlabel=f"k-occurrence N_{k}",
                  ylabel="items")
        ax[3].set(title=f"t-SNE (cosine), {len(pick)} items", xticks=[], yticks=[])
        ax[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
