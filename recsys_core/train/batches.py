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
        negatives = torch.randint(1, split.n_items + 1, (cfg.num_negatives,), device=inputs.device)
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
