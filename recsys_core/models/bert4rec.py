"""BERT4Rec: a bidirectional Transformer trained on the cloze task (Sun et al., 2019).

Random items of a window are replaced by a [mask] token (id n_items + 1) and predicted from both
sides; at evaluation the history is followed by one [mask] whose prediction is the next item.
Learned positions (counted from the end by default, `positions`), post-LayerNorm BERT blocks with GELU, dropout; output head as in the paper:
dense → GELU → LayerNorm, then the tied item embeddings plus an output bias.
"""
from __future__ import annotations

import torch
from torch import nn

from recsys_core.models.base import SequentialModel, position_embeddings


class BERT4Rec(SequentialModel):
    objective = "masked"
    cast_weights_once = True

    def __init__(self, n_items: int, embedding_dim: int = 64, num_heads: int = 2,
                 num_blocks: int = 2, dropout: float = 0.2, max_len: int = 50,
                 ffn_factor: int = 4, positions: str = "from_end", **_):
        super().__init__(n_items, embedding_dim)
        self.positions = positions
        self.mask_token = n_items + 1
        # One row more than the base model's table: the [mask] token (same init).
        self.item_emb = nn.Embedding(n_items + 2, embedding_dim, padding_idx=0)
        self.init_item_embeddings(embedding_dim ** -0.5)
        self.pos_emb = nn.Embedding(max_len, embedding_dim)
        self.emb_norm = nn.LayerNorm(embedding_dim)
        self.emb_dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            embedding_dim, num_heads, dim_feedforward=embedding_dim * ffn_factor, dropout=dropout,
            activation="gelu", batch_first=True, norm_first=False)
        self.blocks = nn.TransformerEncoder(layer, num_blocks, enable_nested_tensor=False)
        self.head_transform = nn.Sequential(
            nn.Linear(embedding_dim, embedding_dim), nn.GELU(), nn.LayerNorm(embedding_dim))
        self.head_bias = nn.Parameter(torch.zeros(n_items + 1))

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Hidden states after the head's transform: what is scored against the item table
        (inside encode so that the sampled-softmax path, which skips `logits`, uses it too)."""
        pos = position_embeddings(self.pos_emb, input_ids, self.positions)
        x = self.embed_items(input_ids) * self.embedding_dim ** 0.5 + pos
        x = self.emb_dropout(self.emb_norm(x))
        pad = input_ids == 0
        # A row of padding only (never built by the trainer, but possible for a caller) would
        # leave attention nothing to attend to, i.e. NaN: such rows attend to everything.
        pad = pad & ~pad.all(1, keepdim=True)
        x = self.blocks(x, src_key_padding_mask=pad)
        return self.head_transform(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        # The [mask] row is an input token only: never scored.
        return hidden @ self.item_emb.weight[: self.n_items + 1].T + self.head_bias

    def output_bias(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head_bias[ids]   # used by the sampled softmax, so the bias is trained there too

    def eval_input(self, history: torch.Tensor) -> torch.Tensor:
        """The history's last L-1 items followed by [mask]: the masked slot is the next item."""
        mask = torch.full_like(history[:, :1], self.mask_token)
        return torch.cat([history[:, 1:], mask], 1)
