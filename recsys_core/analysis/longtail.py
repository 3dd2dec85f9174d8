"""Popularity bias and the long tail (RQ2 on long-tail items), per run.

Items are ranked by train-split interactions (ties by id): head = the top 20%, tail = the
bottom 50%, mid = the rest. On the test split, with full ranking and the run's own filter_seen:
- Recall@10 and NDCG@10 of the users whose test target is a head, mid or tail item;
- the top-10 lists: share of tail (and head) items among all recommendations, catalogue
  coverage (items recommended to anyone / all items), Gini of the items' recommendation
  counts, and the 50 most recommended items with title, count and share of users.
The trainer records `longtail()`'s summary in every result (`longtail_*`, train/recorded.py): this
analysis adds the most recommended items and the figure, from a run's best_model.pt.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from recsys_core.analysis import gini, load_run
from recsys_core.render import write_table
from recsys_core.metrics import metrics_from_ranks, ranks

GROUPS = ("head", "mid", "tail")


def popularity_groups(counts: np.ndarray, head: float = 0.2, tail: float = 0.5) -> np.ndarray:
    """counts: [n_items] train interactions of items 1..n. Returns [n_items] labels."""
    n = len(counts)
    order = np.lexsort((np.arange(n), -counts))          # most popular first, ties by id
    n_head = max(1, math.ceil(head * n))
    n_tail = min(max(1, math.ceil(tail * n)), n - n_head)
    labels = np.full(n, "mid", dtype=object)
    labels[order[:n_head]] = "head"
    labels[order[n - n_tail:]] = "tail"
    return labels


@torch.no_grad()
def longtail(score_fn: Callable[[torch.Tensor], torch.Tensor], split, *, max_len: int,
             filter_seen: bool, k: int = 10, head: float = 0.2, tail: float = 0.5,
             batch_size: int = 1024) -> tuple[dict, np.ndarray, np.ndarray]:
    """score_fn(history [B, L]) → scores [B, ≥ n_items+1]. Returns (summary, recommendation
    count per item 1..n, popularity label per item)."""
    n = split.n_items
    counts = split.train_item_counts()[1:].cpu().numpy()
    labels = popularity_groups(counts, head, tail)
    all_ranks, all_targets = [], []
    recommended = torch.zeros(n + 1, dtype=torch.long, device=split.items.device)
    for start in range(0, split.n_users, batch_size):
        users = torch.arange(start, min(start + batch_size, split.n_users),
                             device=split.items.device)
        history = split.inputs("test", max_len, users)
        scores = score_fn(history).float()[:, : n + 1]
        seen = split.history("test", users) if filter_seen else None
        targets = split.targets("test", users)
        r, _ = ranks(scores, targets, history=seen, n_valid=n + 1)
        lists = scores.clone()
        lists[:, 0] = float("-inf")
        if seen is not None:
            lists.scatter_(1, seen, float("-inf"))
        top = lists.topk(min(k, n), dim=1).indices
        recommended += torch.bincount(top.ravel(), minlength=n + 1)
        all_ranks.append(r.cpu())
        all_targets.append(targets.cpu())
    r, targets = torch.cat(all_ranks), torch.cat(all_targets).numpy()
    target_group = labels[targets - 1]
    summary: dict = {"users": len(r)}
    for group in ("all", *GROUPS):
        mask = torch.as_tensor((target_group == group) | (group == "all"))
        m = metrics_from_ranks(r[mask], [k]) if mask.any() else {}
        summary[f"users_{group}"] = int(mask.sum())
        summary[f"recall@{k}_{group}"] = m.get(f"recall@{k}", float("nan"))
        summary[f"ndcg@{k}_{group}"] = m.get(f"ndcg@{k}", float("nan"))
    rec = recommended[1:].cpu().numpy()
    total = max(int(rec.sum()), 1)
    summary.update({f"share_{g}_in_top{k}": float(rec[labels == g].sum() / total) for g in GROUPS})
    summary.update({"coverage": float((rec > 0).mean()), "gini_recommendations": gini(rec),
                    "items_head": int((labels == "head").sum()),
                    "items_tail": int((labels == "tail").sum())})
    return summary, rec, labels


def most_recommended(rec: np.ndarray, labels: np.ndarray, counts: np.ndarray, titles: list[str],
                     n_users: int, top: int = 50) -> pd.DataFrame:
    order = np.lexsort((np.arange(len(rec)), -rec))[:top]
    return pd.DataFrame({"rank": np.arange(1, len(order) + 1), "item": order + 1,
                         "title": [titles[i + 1] for i in order], "recommended": rec[order],
                         "share_of_users": rec[order] / max(n_users, 1),
                         "train_interactions": counts[order], "group": labels[order]})


def analyse(paths: list[Path], out: Path, k: int = 10, head: float = 0.2, tail: float = 0.5,
            top: int = 50, device: str = "cpu") -> pd.DataFrame:
    rows, curves, tops = [], [], {}
    for path in paths:     # every run read before anything is written: a bad one writes nothing
        run = load_run(path, device)
        summary, rec, labels = longtail(run.model.score_next, run.split, max_len=run.cfg.max_len,
                                        filter_seen=run.cfg.filter_seen, k=k, head=head, tail=tail,
                                        batch_size=run.cfg.eval_batch_size)
        counts = run.split.train_item_counts()[1:].cpu().numpy()
        tops[f"longtail_top{top}_{run.label}"] = most_recommended(
            rec, labels, counts, run.data.titles, run.split.n_users, top)
        rows.append({"run": run.label, "model": run.cfg.model, "dataset": run.cfg.dataset,
                     "seed": run.cfg.seed, "filter_seen": run.cfg.filter_seen, **summary})
        curves.append((run.label, summary, rec, counts))
    for name, most in tops.items():
        write_table(out, name, most)
    table = pd.DataFrame(rows)
    write_table(out, "longtail", table)
    if curves:
        figure(curves, out / "longtail.png", k)
    return table


def figure(curves, path: Path, k: int) -> None:
    """Per run: Recall/NDCG@k by target group; recommendations per item against its
    popularity rank (the long-tail curve)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, len(curves), figsize=(4 * len(curves), 7), squeeze=False)
    for col, (label, s, rec, counts) in enumerate(curves):
        top, bottom = axes[0, col], axes[1, col]
        x = np.arange(len(GROUPS))
        top.bar(x - 0.2, [s[f"recall@{k}_{g}"] for g in GROUPS], 0.4, label=f"Recall@{k}")
        top.bar(x + 0.2, [s[f"ndcg@{k}_{g}"] for g in GROUPS], 0.4, label=f"NDCG@{k}")
        top.set(xticks=x, xticklabels=[f"{g}\n({s[f'users_{g}']} users)" for g in GROUPS],
                title=label)
        top.legend(fontsize=8)
        order = np.lexsort((np.arange(len(counts)), -counts))
        bottom.plot(np.arange(1, len(order) + 1), rec[order], lw=0.8)
        n_head, n_tail = s["items_head"], s["items_tail"]
        bottom.axvspan(1, n_head, color="tab:orange", alpha=0.15, label="head")
        bottom.axvspan(len(order) - n_tail + 1, len(order), color="tab:green", alpha=0.15,
                       label="tail")
        bottom.set(xlabel="item popularity rank (train)", ylabel=f"times in top-{k}",
                   title=f"tail share {s[f'share_tail_in_top{k}']:.3f}, coverage "
                         f"{s['coverage']:.2f}, Gini {s['gini_recommendations']:.2f}")
        bottom.set_yscale("symlog")
        bottom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
