"""Leave-one-out split and the index arithmetic that turns sequences into model inputs.

For a user with sequence s[0..n-1]:
- train      = s[0 .. n-3]           (every item but the last two)
- validation = target s[n-2], input s[0 .. n-3]
- test       = target s[n-1], input s[0 .. n-2]   (the validation item included)
Inputs keep the last L items, left padded with 0. Everything is tensors over all users at once
(no per-user Python), so the same code builds batches on a CPU or on a GPU.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from recsys_core.data.dataset import SequenceData

SPLITS = ("val", "test")


@dataclass
class LeaveOneOut:
    n_users: int
    n_items: int
    offsets: torch.Tensor      # int64 [U+1]
    items: torch.Tensor        # int64 [N]
    # history lengths per split on the host (history_width), made at first use
    _host_lengths: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_data(cls, data: SequenceData, device: torch.device | str = "cpu") -> "LeaveOneOut":
        if data.n_users and int(data.lengths.min()) < 3:
            raise ValueError(f"{data.name}: leave-one-out needs >= 3 interactions per user")
        return cls(data.n_users, data.n_items,
                   torch.as_tensor(data.offsets, device=device),
                   torch.as_tensor(data.items, device=device))

    def to(self, device) -> "LeaveOneOut":
        return LeaveOneOut(self.n_users, self.n_items, self.offsets.to(device), self.items.to(device))

    @property
    def starts(self) -> torch.Tensor:
        return self.offsets[:-1]

    @property
    def train_ends(self) -> torch.Tensor:
        """Exclusive end of each user's train sequence (= index of the validation target)."""
        return self.offsets[1:] - 2

    def target_index(self, split: str) -> torch.Tensor:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        return self.offsets[1:] - (2 if split == "val" else 1)

    def targets(self, split: str, users: torch.Tensor | None = None) -> torch.Tensor:
        idx = self.target_index(split)
        return self.items[idx if users is None else idx[users]]

    def inputs(self, split: str, max_len: int, users: torch.Tensor | None = None) -> torch.Tensor:
        """[B, max_len] left-padded inputs: the last max_len items before the target."""
        users = self._all(users)
        return self.window(self.starts[users], self.target_index(split)[users], max_len)

    def history(self, split: str, users: torch.Tensor | None = None,
                width: int | None = None) -> torch.Tensor:
        """[B, H] every item before the target (padded with 0), for filtering seen items.
        H: the longest of these histories (a host read), or `width` where the caller knows it
        (`history_width`), e.g. to keep a GPU's evaluation free of host reads."""
        users = self._all(users)
        ends = self.target_index(split)[users]
        starts = self.starts[users]
        if width is None:
            width = max(int((ends - starts).max()) if len(users) else 1, 1)
        return self.window(starts, ends, width)

    def history_width(self, split: str, users_on_host: torch.Tensor) -> int:
        """The width `history` gives these users (ids on the host), read from a host copy of
        every user's history length, made once per split."""
        lengths = self._host_lengths.get(split)
        if lengths is None:
            lengths = (self.target_index(split) - self.starts).cpu()
            self._host_lengths[split] = lengths
        return max(int(lengths[users_on_host].max()) if len(users_on_host) else 1, 1)

    def window(self, starts: torch.Tensor, ends: torch.Tensor, length: int) -> torch.Tensor:
        """items[max(start, end-length) : end] per row, left padded to `length`."""
        pos = ends[:, None] - length + torch.arange(length, device=ends.device)[None, :]
        valid = pos >= starts[:, None]
        return torch.where(valid, self.items[pos.clamp(min=0)], torch.zeros_like(pos))

    def train_windows(self, max_len: int, mode: str = "all") -> tuple[torch.Tensor, torch.Tensor]:
        """(starts, ends) of training windows of up to max_len+1 items: input = window[:-1],
        targets = window[1:]. mode="all" cuts each train sequence from its end into windows that
        overlap by one item, so every train item but a user's first is a target exactly once;
        mode="last" keeps only the last window per user (the SASRec paper's recipe)."""
        if mode not in ("all", "last"):
            raise ValueError(f"unknown train window mode {mode!r}; valid: all, last")
        starts, ends = self.starts, self.train_ends
        n_targets = (ends - starts - 1).clamp(min=0)
        per_user = torch.ones_like(n_targets) if mode == "last" else \
            ((n_targets + max_len - 1) // max_len).clamp(min=1)
        user = torch.repeat_interleave(torch.arange(self.n_users, device=ends.device), per_user)
        first = torch.cumsum(per_user, 0) - per_user
        k = torch.arange(len(user), device=ends.device) - first[user]   # 0 = last window
        w_end = ends[user] - k * max_len
        w_start = torch.maximum(starts[user], w_end - max_len - 1)
        return w_start, w_end

    def train_item_counts(self) -> torch.Tensor:
        """[n_items+1] interactions per item in the train split (what `pop` scores by)."""
        pos = torch.arange(len(self.items), device=self.items.device)
        user = torch.repeat_interleave(torch.arange(self.n_users, device=pos.device),
                                       self.offsets[1:] - self.offsets[:-1])
        in_train = pos < self.train_ends[user]
        return torch.bincount(self.items[in_train], minlength=self.n_items + 1)

    def _all(self, users):
        return torch.arange(self.n_users, device=self.offsets.device) if users is None else users
