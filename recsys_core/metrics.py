"""Full-ranking metrics: every item is a candidate except padding, the mask token and (with
filter_seen) items the user already has in their history.

Ties are pessimistic: rank = 1 + the number of other candidates whose score is >= the
target's, so a model that scores everything equal gets the worst rank, not the best. A NaN
score counts as the worst possible score (a NaN target ranks below every candidate) and is
counted in the output, so a broken model cannot look good.
"""
from __future__ import annotations

import torch

from recsys_core.metric_names import DEFAULT_KS, METRICS

__all__ = ["DEFAULT_KS", "METRICS", "metrics_from_ranks", "ranks"]


def ranks(scores: torch.Tensor, targets: torch.Tensor, *, history: torch.Tensor | None = None,
          n_valid: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pessimistic 1-based rank of each target among the candidates.

    scores:  [B, V] float, column i = item id i; column 0 is padding and never a candidate.
    targets: [B] item ids in 1..V-1.
    history: [B, H] item ids to exclude (0 entries are ignored); the target stays a candidate.
    n_valid: columns >= n_valid (e.g. a [MASK] token) are never candidates.
    Returns (ranks [B] int64, nan_count [B] int64 = NaN scores among the row's candidates).
    """
    b, v = scores.shape
    candidate = torch.ones(b, v, dtype=torch.bool, device=scores.device)
    candidate[:, 0] = False
    if n_valid is not None:
        candidate[:, n_valid:] = False
    if history is not None and history.numel():
        candidate.scatter_(1, history, False)
        candidate[:, 0] = False
    rows = torch.arange(b, device=scores.device)
    candidate[rows, targets] = True
    nan = torch.isnan(scores)
    # NaN → -inf: a NaN candidate never beats a finite target; a NaN target is beaten (or tied,
    # which counts against it) by every candidate.
    s = torch.where(nan, torch.full_like(scores, float("-inf")), scores.float())
    target_score = s[rows, targets]
    at_least = (s >= target_score[:, None]) & candidate
    r = at_least.sum(1)          # includes the target itself, so this is already 1 + others
    return r, (nan & candidate).sum(1)


def metrics_from_ranks(r: torch.Tensor, ks=DEFAULT_KS) -> dict[str, float]:
    """Mean Recall@K (= hit rate, one target), NDCG@K, MRR@K, Precision@K over users."""
    r = r.double()
    names, values = [], []
    for k in ks:
        hit = (r <= k).double()
        names += [f"recall@{k}", f"ndcg@{k}", f"mrr@{k}", f"precision@{k}"]
        values += [hit.mean(), (hit / torch.log2(r + 1)).mean(), (hit / r).mean(), (hit / k).mean()]
    # one host read for all of them (on a GPU each .item() is a sync)
    return dict(zip(names, torch.stack(values).tolist())) if values else {}
