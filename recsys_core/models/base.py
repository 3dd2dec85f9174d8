"""The one interface every model implements: item ids in, scores over all items out.

Inputs are [B, L] item ids, left padded with 0. `encode` gives a hidden state per position,
`logits` turns hidden states into scores over ids 0..n_items (column 0 is padding and never
recommended). `objective` tells the trainer how to build targets: "causal" (next item at every
position: SASRec, GRU4Rec, LSTM, xLSTM) or "masked" (BERT4Rec's cloze task).
Parameters are counted as embedding (module names starting with `item_emb`/`pos_emb`),
head (`head`) and backbone (everything else), the split of the study's parameter table.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SequentialModel(nn.Module):
    objective = "causal"
    trainable = True

    def __init__(self, n_items: int, embedding_dim: int):
        super().__init__()
        self.n_items = n_items
        self.embedding_dim = embedding_dim
        # Tied output layer: scores are dot products with the item embeddings (SASRec+ recipe).
        self.item_emb = nn.Embedding(n_items + 1, embedding_dim, padding_idx=0)
        # N(0, 1/D): dot products with a LayerNorm'd hidden state start at unit scale (the
        # default N(0, 1) would start the softmax with logits of size ~D).
        self.init_item_embeddings(embedding_dim ** -0.5)

    def init_item_embeddings(self, std: float) -> None:
        """N(0, std²) item embeddings, padding row zero. The published SASRec+/BERT4Rec code
        (Klenitskiy & Vasilev) uses std 0.02, six times less than our default at D=64."""
        nn.init.normal_(self.item_emb.weight, std=std)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor,
                negatives: torch.Tensor | None = None) -> torch.Tensor:
        """Mean training loss over target positions (targets == 0 are ignored).

        Full softmax over all items by default; with `negatives` ([K] sampled item ids shared
        by the batch) a sampled softmax over [target, negatives] for very large catalogs.
        The loss lives in forward() so that DistributedDataParallel sees the whole step.
        """
        hidden = self.encode(input_ids)
        if negatives is None:
            logits = self.logits(hidden).float()
            total = F.cross_entropy(logits.flatten(0, -2), targets.flatten(), ignore_index=0,
                                    reduction="sum")
            # Sum / count rather than mean: a batch with no target gives 0, not NaN.
            return total / (targets != 0).sum().clamp(min=1)
        h = hidden.flatten(0, -2)
        t = targets.flatten()
        pos = ((h * self.item_emb(t)).sum(-1) + self.output_bias(t))[:, None]
        neg = h @ self.item_emb(negatives).T + self.output_bias(negatives)
        neg = neg.masked_fill(negatives[None, :] == t[:, None], float("-inf"))
        logits = torch.cat([pos, neg], 1).float()
        loss = F.cross_entropy(logits, torch.zeros_like(t), reduction="none")
        keep = (t != 0).float()
        return (loss * keep).sum() / keep.sum().clamp(min=1)

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:  # [B, L] -> [B, L, D]
        raise NotImplementedError

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:     # [..., D] -> [..., n_items+1]
        return hidden @ self.item_emb.weight[: self.n_items + 1].T

    def output_bias(self, ids: torch.Tensor):
        """Per-item output bias added to the scores of `ids` (none here; BERT4Rec has one)."""
        return 0.0

    def eval_input(self, history: torch.Tensor) -> torch.Tensor:
        """Model input for predicting the item after `history` ([B, L], left padded)."""
        return history

    def score_next(self, history: torch.Tensor) -> torch.Tensor:
        """[B, n_items+1] scores of the item that follows each history."""
        return self.logits(self.encode(self.eval_input(history))[:, -1])

    def param_counts(self) -> dict[str, int]:
        counts = {"embedding": 0, "backbone": 0, "head": 0}
        seen = set()
        for name, p in self.named_parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            part = "embedding" if name.startswith(("item_emb", "pos_emb")) else \
                "head" if name.startswith("head") else "backbone"
            counts[part] += p.numel()
        return {"total": sum(counts.values()), **counts}
