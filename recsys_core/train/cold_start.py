"""Cold-start users (seed 001, section 4.3): the users the main split drops for having fewer
than `min_user_interactions`, those with 2 or more, evaluated apart after training. Each one's
last item is the test target and the items before it the input; the trained model and the
popularity fallback (train-split item counts, what `pop` scores by) rank every item, seen
items filtered as in the main evaluation. A user whose target appears in no kept user's
history cannot be recommended by any model: such users are counted
(`cold_users_unknown_target`) and left out; items of the input that no kept user has are
dropped from it (they have no embedding). Datasets without such users (5-core files, the
GroupLens originals) report `cold_users: 0` and no cold metrics.
"""
from __future__ import annotations

import numpy as np
import torch

from recsys_core.metrics import metrics_from_ranks, ranks

REPORTED = ("recall", "ndcg")


def cold_inputs(data, max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(inputs [U, max_len] left padded, targets [U], histories [U, H] for filtering, number
    of users left out for an unknown target)."""
    offsets, items = data.cold_offsets, data.cold_items
    rows, targets, unknown = [], [], 0
    for a, b in zip(offsets[:-1], offsets[1:]):
        if items[b - 1] == 0:
            unknown += 1
            continue
        history = items[a:b - 1]
        rows.append(history[history != 0])
        targets.append(items[b - 1])
    width = max([len(r) for r in rows] + [1])
    histories = np.zeros((len(rows), width), np.int64)
    for i, r in enumerate(rows):
        if len(r):
            histories[i, -len(r):] = r
    inputs = histories[:, -max_len:] if width >= max_len else \
        np.pad(histories, ((0, 0), (max_len - width, 0)))
    return inputs, np.asarray(targets, np.int64), histories, unknown


@torch.no_grad()
def cold_start_metrics(model, data, split, *, max_len: int, filter_seen: bool, ks,
                       batch_size: int, accelerator) -> dict:
    """`cold_users`, `cold_users_unknown_target`, and `cold_test_*` / `cold_pop_test_*`
    Recall and NDCG at every k (none where there is no cold-start user)."""
    inputs, targets, histories, unknown = cold_inputs(data, max_len)
    out: dict = {"cold_users": int(len(targets)), "cold_users_unknown_target": unknown}
    if not len(targets):
        return out
    device = accelerator.device
    model = accelerator.unwrap_model(model)
    model.eval()
    pop = split.train_item_counts().float()
    scorers = {"cold_test": model.score_next,
               "cold_pop_test": lambda h: pop.expand(len(h), -1)}
    for prefix, score in scorers.items():
        found = []
        for i in range(0, len(targets), batch_size):
            x = torch.as_tensor(inputs[i:i + batch_size], device=device)
            with accelerator.autocast():
                scores = score(x).float()
            seen = torch.as_tensor(histories[i:i + batch_size], device=device) \
                if filter_seen else None
            r, _ = ranks(scores, torch.as_tensor(targets[i:i + batch_size], device=device),
                         history=seen, n_valid=split.n_items + 1)
            found.append(r)
        metrics = metrics_from_ranks(torch.cat(found), ks)
        out.update({f"{prefix}_{name}": v for name, v in metrics.items()
                    if name.split("@")[0] in REPORTED})
    return out
