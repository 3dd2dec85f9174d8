"""The analyses every finished run records in its result.json, from the best model it has in
memory: what `python -m recsys_core.analysis longtail|geometry` computes from best_model.pt,
without the checkpoint ever leaving the machine (a GPU call brings back 64 MiB; session 12 lost
the geometry of 15 cells whose checkpoints went with the machine). Each is fenced: a failure
gives `<group>_error` in the result, and the cell still completes.
"""
from __future__ import annotations

import torch

from recsys_core.analysis.longtail import longtail
from recsys_core.train.setup import Run


def longtail_figures(r: Run) -> dict:
    """The long tail of the test split (RQ2): head = the top 20% of items by train
    interactions, tail = the bottom 50%, k = 10, the run's filter_seen. Recall/NDCG@10 and users
    per target group, tail/mid/head share of the top-10 lists, coverage, Gini of
    recommendations, items per group; `longtail_`-prefixed. Scored as the test metrics are (the
    run's autocast: on a GPU under bf16 the analysis CLI's fp32 figures can differ in the last
    digits; on the CPU they are equal)."""
    model = r.unwrapped
    model.eval()

    def score(history: torch.Tensor) -> torch.Tensor:
        with r.accelerator.autocast():
            return model.score_next(history)
    try:
        summary, _, _ = longtail(score, r.split, max_len=r.cfg.max_len,
                                 filter_seen=r.cfg.filter_seen, batch_size=r.cfg.eval_batch_size)
    except Exception as e:  # noqa: BLE001 -- an extra analysis must not fail a finished cell
        return {"longtail_error": f"{type(e).__name__}: {e}"[:500]}
    return {f"longtail_{k}": v for k, v in summary.items() if k != "users"}


def geometry_figures(r: Run) -> dict:
    """RQ4's per-run measures of the item embeddings (k = 10 cosine neighbours): dimensions
    for 90% of the variance, participation ratio, anisotropy, hubness (skewness, Gini, the
    largest k-occurrence), mean norm, items and dimension; `geometry_`-prefixed. The k-NN runs
    on the run's device (seconds for 54k items on a GPU). Nothing for a model without item
    embeddings (pop). Cross-run measures (CKA, k-NN overlap) need two runs: the analysis CLI."""
    try:
        from recsys_core.analysis import item_embeddings
        from recsys_core.analysis.geometry import measures
        emb = item_embeddings(r.unwrapped)
        if emb is None:
            return {}
        row, _, _ = measures(emb, k=10, device=str(r.accelerator.device))
    except Exception as e:  # noqa: BLE001 -- as above
        return {"geometry_error": f"{type(e).__name__}: {e}"[:500]}
    return {f"geometry_{k}": v for k, v in row.items()}
