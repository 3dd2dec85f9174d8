"""A generated dataset with Zipf-like popularity and real sequential structure.

Items live in clusters, and inside each cluster they form a ring. A user starts in a random
cluster; at each step they either follow the ring to the successor of their last item
(`p_follow`), or drift to a neighbouring cluster (`p_drift`) and pick an item there by
popularity, or stay and pick by popularity. Popularity alone therefore predicts the next item
poorly, while a model that reads the sequence can learn the successor rule and the cluster a
user is in: on this data a sequence model must beat `pop`, which is what the tests check.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class SyntheticSpec:
    n_users: int = 500
    n_items: int = 300
    n_interactions: int = 15_000      # expected total; lengths are random around the mean
    n_clusters: int = 10
    zipf_exponent: float = 1.0
    p_follow: float = 0.6
    p_drift: float = 0.1
    min_length: int = 5
    seed: int = 0


def generate(spec: SyntheticSpec) -> tuple[pd.DataFrame, dict[int, str]]:
    if spec.n_items < spec.n_clusters or spec.n_clusters < 1:
        raise ValueError(f"synthetic: need 1 <= n_clusters <= n_items, got {spec}")
    rng = np.random.default_rng(spec.seed)
    cluster_of = np.arange(spec.n_items) * spec.n_clusters // spec.n_items  # contiguous blocks
    starts = np.searchsorted(cluster_of, np.arange(spec.n_clusters))
    sizes = np.bincount(cluster_of, minlength=spec.n_clusters)
    # Zipf weights assigned to items in random order, normalised within each cluster.
    weight = 1.0 / np.arange(1, spec.n_items + 1) ** spec.zipf_exponent
    weight = weight[rng.permutation(spec.n_items)]
    cum_in_cluster = np.zeros(spec.n_items)
    for c in range(spec.n_clusters):
        w = weight[starts[c]:starts[c] + sizes[c]]
        cum_in_cluster[starts[c]:starts[c] + sizes[c]] = np.cumsum(w) / w.sum()

    mean_len = max(spec.n_interactions / spec.n_users, spec.min_length)
    lengths = rng.lognormal(0.0, 0.7, spec.n_users)
    lengths = np.maximum(spec.min_length, np.round(lengths / lengths.mean() * mean_len)).astype(int)

    def pick_in(clusters: np.ndarray) -> np.ndarray:
        u = rng.random(len(clusters))
        out = np.empty(len(clusters), dtype=np.int64)
        for c in np.unique(clusters):
            sel = clusters == c
            cum = cum_in_cluster[starts[c]:starts[c] + sizes[c]]
            out[sel] = starts[c] + np.minimum(np.searchsorted(cum, u[sel]), sizes[c] - 1)
        return out

    seq = np.zeros((spec.n_users, lengths.max()), dtype=np.int64)
    cluster = rng.integers(0, spec.n_clusters, spec.n_users)
    seq[:, 0] = pick_in(cluster)
    for t in range(1, lengths.max()):
        last = seq[:, t - 1]
        r = rng.random(spec.n_users)
        follow = r < spec.p_follow
        drift = (r >= spec.p_follow) & (r < spec.p_follow + spec.p_drift)
        cluster = np.where(drift, (cluster + rng.choice([-1, 1], spec.n_users)) % spec.n_clusters,
                           cluster)
        c_last = cluster_of[last]
        successor = starts[c_last] + (last - starts[c_last] + 1) % sizes[c_last]
        seq[:, t] = np.where(follow, successor, pick_in(cluster))
        cluster = np.where(follow, c_last, cluster)

    mask = np.arange(seq.shape[1])[None, :] < lengths[:, None]
    users = np.broadcast_to(np.arange(1, spec.n_users + 1)[:, None], seq.shape)[mask]
    steps = np.broadcast_to(np.arange(seq.shape[1])[None, :], seq.shape)[mask]
    df = pd.DataFrame({
        "user": users.astype(np.int64),
        "item": seq[mask] + 1,
        "timestamp": 1_000_000 + steps.astype(np.int64) * 60,
        "rating": np.nan,
    })
    titles = {i + 1: f"Item {i + 1} (cluster {cluster_of[i]})" for i in range(spec.n_items)}
    return df, titles
