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
        first, last = indices[0], indices[-1]
        if last - first + 1 == len(indices):    # the evaluation's batches: a range, no list copy
            return torch.arange(first, last + 1)
        return torch.as_tensor(indices, dtype=torch.long)


def user_loader(n_users: int, batch_size: int, accelerator=None) -> DataLoader:
    """Batches of user ids; with `accelerator`, this process's shard of them, left on the host
    (each batch's history width is read there: `user_ranks`)."""
    loader = DataLoader(UserIds(n_users), batch_size=batch_size, shuffle=False,
                        collate_fn=lambda batch: batch)
    if accelerator is None:
        return loader
    return accelerator.prepare_data_loader(loader, device_placement=False)


@torch.no_grad()
def user_ranks(model, split: LeaveOneOut, which: str, *, max_len: int, filter_seen: bool,
               loader, accelerator, n_valid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranks of every user's `which` target (all processes), and NaN-score counts."""
    model = accelerator.unwrap_model(model)   # scoring is not a DDP forward
    model.eval()
    all_ranks, all_nans = [], []
    # One autocast for the whole loop: entering it checks the device's bf16 support, about
    # 1 ms of driver calls each time (0.2 s of a Beauty cell's 180 batches).
    with accelerator.autocast():
        for host_users in loader:
            # No host read in the loop (the width of the seen items comes from the host's copy
            # of the history lengths, ranks() reads nothing back on a GPU): the next batch's
            # kernels queue while this one's run, and the evaluation waits once, for its metrics.
            users = host_users.to(split.items.device, non_blocking=True)
            history = split.inputs(which, max_len, users)
            scores = model.score_next(history)
            seen = (split.history(which, users, width=split.history_width(which, host_users))
                    if filter_seen else None)
            # ranked in the scores' own dtype: bf16 → fp32 changes no comparison, only the bytes
            r, nan = ranks(scores, split.targets(which, users), history=seen, n_valid=n_valid)
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


PREDICTION_USERS = 5


@torch.no_grad()
def predictions(model, split, data, cfg, n_users: int = PREDICTION_USERS) -> list[str]:
    """Top-10 test recommendations with titles for the first few users."""
    from recsys_core.metrics import ranks
    model.eval()
    users = torch.arange(min(n_users, split.n_users), device=split.items.device)
    history = split.inputs("test", cfg.max_len, users)
    scores = model.score_next(history).float().clone()
    scores[:, 0] = float("-inf")
    scores = scores[:, : split.n_items + 1]
    seen = split.history("test", users)
    if cfg.filter_seen:
        scores.scatter_(1, seen, float("-inf"))
    targets = split.targets("test", users)
    target_rank, _ = ranks(scores, targets, history=seen if cfg.filter_seen else None)
    top = scores.topk(min(10, split.n_items), dim=1).indices.cpu()
    lines = []
    for row, u in enumerate(users.tolist()):
        recent = [data.titles[i] for i in history[row].tolist() if i][-3:]
        t = int(targets[row])
        lines.append(f"user {int(data.user_raw_ids[u])}: last watched {recent}")
        lines.append(f"  test target: {data.titles[t]} (rank {int(target_rank[row])})")
        for k, i in enumerate(top[row].tolist(), 1):
            mark = "  <- target" if i == t else ""
            lines.append(f"  {k:2d}. {data.titles[i]}{mark}")
    return lines
