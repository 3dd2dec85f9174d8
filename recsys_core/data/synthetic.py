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

from recsys_core.data.fetch import DataError


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


def spec_problem(options: dict) -> str | None:
    """What is wrong with these SyntheticSpec overrides (a config's `synthetic`), if anything:
    an unknown key, a value of the wrong kind or out of range."""
    defaults = SyntheticSpec()
    valid = list(vars(defaults))
    unknown = sorted(set(options) - set(valid))
    if unknown:
        return f"unknown key(s) {', '.join(map(str, unknown))}; valid: {', '.join(valid)}"
    for key, value in options.items():
        integer = isinstance(getattr(defaults, key), int)
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) \
                or not np.isfinite(value):
            return f"{key}={value!r}: expected {'an integer' if integer else 'a finite number'}"
    spec = SyntheticSpec(**options)
    for key in ("n_users", "n_items", "n_interactions", "min_length"):
        if getattr(spec, key) < 1:
            return f"{key}={getattr(spec, key)}: expected 1 or more"
    if not 1 <= spec.n_clusters <= spec.n_items:
        return f"n_clusters={spec.n_clusters}: expected 1 to n_items ({spec.n_items})"
    if spec.zipf_exponent < 0:
        return f"zipf_exponent={spec.zipf_exponent}: expected 0 or more"
    if min(spec.p_follow, spec.p_drift) < 0 or spec.p_follow + spec.p_drift > 1:
        return (f"p_follow={spec.p_follow}, p_drift={spec.p_drift}: expected probabilities "
                "0 or more whose sum is at most 1")
    return None


def generate(spec: SyntheticSpec) -> tuple[pd.DataFrame, dict[int, str]]:
    problem = spec_problem(vars(spec))
    if problem:
        raise DataError(f"synthetic: {problem}")   # a shape's own values with the overrides
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

    # Picking by popularity inside a cluster is one searchsorted over all items: cluster c's
    # cumulative weights shifted by c, so c + u falls inside cluster c's block.
    keys = cluster_of + cum_in_cluster
    last_of = starts + sizes - 1

    def pick_in(clusters: np.ndarray, u: np.ndarray) -> np.ndarray:
        picked = np.searchsorted(keys, clusters + u, side="right")
        return np.minimum(np.maximum(picked, starts[clusters]), last_of[clusters])

    seq = np.zeros((spec.n_users, lengths.max()), dtype=np.int32)
    cluster = rng.integers(0, spec.n_clusters, spec.n_users)
    seq[:, 0] = pick_in(cluster, rng.random(spec.n_users))
    for t in range(1, lengths.max()):
        # Random numbers are drawn for every user (the same stream whatever the lengths), the
        # walk is computed only for users whose sequence is still running.
        r = rng.random(spec.n_users)
        step = rng.choice([-1, 1], spec.n_users)
        u = rng.random(spec.n_users)
        act = np.flatnonzero(lengths > t)
        r, step, u, c = r[act], step[act], u[act], cluster[act]
        last = seq[act, t - 1]
        follow = r < spec.p_follow
        drift = (r >= spec.p_follow) & (r < spec.p_follow + spec.p_drift)
        c = np.where(drift, (c + step) % spec.n_clusters, c)
        c_last = cluster_of[last]
        successor = starts[c_last] + (last - starts[c_last] + 1) % sizes[c_last]
        seq[act, t] = np.where(follow, successor, pick_in(c, u))
        cluster[act] = np.where(follow, c_last, c)

    mask = np.arange(seq.shape[1])[None, :] < lengths[:, None]
    users = np.broadcast_to(np.arange(1, spec.n_users + 1)[:, None], seq.shape)[mask]
    steps = np.broadcast_to(np.arange(seq.shape[1])[None, :], seq.shape)[mask]
    df = pd.DataFrame({
        "user": users.astype(np.int64),
        "item": seq[mask].astype(np.int64) + 1,
        "timestamp": 1_000_000 + steps.astype(np.int64) * 60,
        "rating": np.nan,
    })
    titles = {i + 1: f"Item {i + 1} (cluster {cluster_of[i]})" for i in range(spec.n_items)}
    return df, titles
