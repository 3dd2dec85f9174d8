"""Training batches built by index arithmetic on the device: no per-sample Python work.

Every epoch is a permutation of all training windows, seeded by (seed, epoch) so that every
process draws the same one and takes an equal, disjoint share of it (the data-parallel shard),
and so that a run resumed at epoch E sees exactly the batches an uninterrupted run would.
"""
from __future__ import annotations

import torch


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int, world: int,
                  device) -> tuple[torch.Tensor, ...]:
    return epoch_share(n, seed, epoch, rank, world).to(device).split(batch_size)


def epoch_share(n: int, seed: int, epoch: int, rank: int, world: int) -> torch.Tensor:
    """This process's windows of the epoch, in order: the epoch's permutation (by seed and
    epoch), cut into equal shares so that every process runs the same number of steps."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)
    share = n // world
    return perm[rank * share:(rank + 1) * share] if world > 1 else perm


def training_batch(cfg, model, split, starts: torch.Tensor, ends: torch.Tensor):
    """(inputs, targets, negatives) for one batch of windows; target 0 = no loss there."""
    if model.objective == "masked":
        seq = split.window(starts, ends, cfg.max_len)
        masked = (torch.rand(seq.shape, device=seq.device) < cfg.mask_prob) & (seq != 0)
        inputs = torch.where(masked, torch.full_like(seq, model.mask_token), seq)
        targets = torch.where(masked, seq, torch.zeros_like(seq))
    else:
        window = split.window(starts, ends, cfg.max_len + 1)
        inputs, targets = window[:, :-1], window[:, 1:]
        targets = torch.where(inputs != 0, targets, torch.zeros_like(targets))
    negatives = None
    if cfg.loss == "sampled":
        shape = (cfg.num_negatives,) if cfg.negatives_per == "batch" else \
            (*inputs.shape, cfg.num_negatives)
        negatives = torch.randint(1, split.n_items + 1, shape, device=inputs.device)
    return inputs, targets, negatives


def padded_epoch_batches(n: int, batch_size: int, seed: int, epoch: int, device,
                         pad_index: int | None = None, rank: int = 0, world: int = 1) -> torch.Tensor:
    """This process's epoch of `epoch_batches` as one [steps, batch_size] index matrix (the
    same permutation and share, the same batches in the same order), the last partial row filled with
    `pad_index` (default n). Indexing windows extended by `with_empty_window` at n gives that
    row all-zero sequences, whose targets are 0: the loss (a sum over targets / their count)
    and its gradients are those of the unpadded batch. A fixed batch shape is what a CUDA
    graph of the training step needs."""
    mine = epoch_share(n, seed, epoch, rank, world)
    steps = max(-(-len(mine) // batch_size), 1)
    rows = torch.full((steps * batch_size,), n if pad_index is None else pad_index,
                      dtype=torch.long)
    rows[:len(mine)] = mine
    return rows.view(steps, batch_size).to(device)


def with_empty_window(starts: torch.Tensor, ends: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(starts, ends) with one more window at index len(starts) that holds no item
    (start = end = 0: `LeaveOneOut.window` gives all padding for it)."""
    zero = starts.new_zeros(1)
    return torch.cat([starts, zero]), torch.cat([ends, zero])


def window_target_counts(objective: str, starts: torch.Tensor, ends: torch.Tensor,
                         max_len: int) -> torch.Tensor:
    """The most targets each training window can hold (CPU): causal, every item of the
    window but the first (at most max_len); masked, every item (any of them may be masked)."""
    items = (ends - starts).clamp(min=0).cpu()
    if objective == "masked":
        return items.clamp(max=max_len)
    return (items.clamp(max=max_len + 1) - 1).clamp(min=0)


# Above this many window draws (windows x epochs) the capacity is the worst case over any
# batch instead of the exact maximum over the run's batches (which costs a permutation each).
EXACT_CAPACITY_DRAWS = 200_000_000


def target_capacity(counts: torch.Tensor, batch_size: int, seed: int, epochs: int,
                    rank: int = 0, world: int = 1, multiple: int = 64) -> int:
    """The most targets any batch of this process holds in epochs 1..`epochs` (the batches
    are fixed by (seed, epoch): `epoch_share`), rounded up to a multiple of `multiple`: the
    number of rows a fixed-shape step scores (`models.base.scored_positions`) so that no
    target is ever left out. Very large runs take the worst case over any batch (the sum of
    the `batch_size` largest counts)."""
    n = len(counts)
    if n * epochs > EXACT_CAPACITY_DRAWS:
        most = int(counts.topk(min(batch_size, n)).values.sum())
    else:
        most = 0
        for epoch in range(1, epochs + 1):
            mine = counts[epoch_share(n, seed, epoch, rank, world)]
            if not len(mine):
                continue
            # batch sums as differences of the running sum at batch boundaries
            running = torch.cat([mine.new_zeros(1), mine.cumsum(0)])
            bounds = torch.arange(0, len(mine) + batch_size, batch_size).clamp(max=len(mine))
            most = max(most, int((running[bounds[1:]] - running[bounds[:-1]]).max()))
    return max(-(-most // multiple) * multiple, multiple)
