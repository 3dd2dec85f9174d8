"""Full-ranking evaluation of every user, sharded across processes through Accelerate.

Each process scores its users' next item (a prepared DataLoader over user ids shards them),
ranks come back from all processes with `gather_for_metrics` (which drops the padding that
even sharding adds), and the metrics are means over exactly one rank per user, so 1 and N
processes give the same numbers for the same checkpoint.
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from recsys_core.data.split import LeaveOneOut
from recsys_core.metrics import metrics_from_ranks, ranks


class UserIds(Dataset):
    """User indices 0..n-1; `__getitems__` returns a whole batch as one tensor (no per-user
    Python work in the loader)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        return torch.as_tensor(indices, dtype=torch.long)


def user_loader(n_users: int, batch_size: int) -> DataLoader:
    return DataLoader(UserIds(n_users), batch_size=batch_size, shuffle=False,
                      collate_fn=lambda batch: batch)


@torch.no_grad()
def user_ranks(model, split: LeaveOneOut, which: str, *, max_len: int, filter_seen: bool,
               loader, accelerator, n_valid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranks of every user's `which` target (all processes), and NaN-score counts."""
    model = accelerator.unwrap_model(model)   # scoring is not a DDP forward
    model.eval()
    all_ranks, all_nans = [], []
    for users in loader:
        users = users.to(split.items.device)
        history = split.inputs(which, max_len, users)
        with accelerator.autocast():
            scores = model.score_next(history)
        seen = split.history(which, users) if filter_seen else None
        r, nan = ranks(scores.float(), split.targets(which, users), history=seen, n_valid=n_valid)
        all_ranks.append(accelerator.gather_for_metrics(r))
        all_nans.append(accelerator.gather_for_metrics(nan))
    return torch.cat(all_ranks), torch.cat(all_nans)


def evaluate(model, split: LeaveOneOut, which: str, *, max_len: int, filter_seen: bool, ks,
             loader, accelerator) -> dict[str, float]:
    """Flat metrics `{which}_recall@10`, ... plus `{which}_nan_scores` and `{which}_users`."""
    r, nan = user_ranks(model, split, which, max_len=max_len, filter_seen=filter_seen,
                        loader=loader, accelerator=accelerator, n_valid=split.n_items + 1)
    out = {f"{which}_{k}": v for k, v in metrics_from_ranks(r, ks).items()}
    out[f"{which}_nan_scores"] = int(nan.sum())    # after the metrics' read: no extra wait
    out[f"{which}_users"] = int(len(r))
    return out
