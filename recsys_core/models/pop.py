"""Popularity: every user gets the train split's most interacted items. Not trained."""
from __future__ import annotations

import torch

from recsys_core.models.base import SequentialModel


class Pop(SequentialModel):
    trainable = False

    def __init__(self, n_items: int, **_):
        super().__init__(n_items, embedding_dim=1)
        del self.item_emb
        self.register_buffer("counts", torch.zeros(n_items + 1))

    def fit(self, train_item_counts: torch.Tensor) -> None:
        self.counts.copy_(train_item_counts.float())

    def score_next(self, history: torch.Tensor) -> torch.Tensor:
        return self.counts.expand(history.shape[0], -1)
