"""SASRec: a causal Transformer over the item sequence (Kang & McAuley, 2018).

Trained on every position with full-softmax cross-entropy over all items (the SASRec+ recipe of
Klenitskiy & Vasilev, 2023) by the trainer; learned positions, pre-LayerNorm blocks, dropout.
"""
from __future__ import annotations

import torch
from torch import nn

from recsys_core.models.base import SequentialModel


class SASRec(SequentialModel):
    def __init__(self, n_items: int, embedding_dim: int = 64, num_heads: int = 2,
                 num_blocks: int = 2, dropout: float = 0.2, max_len: int = 50,
                 ffn_factor: int = 4, **_):
        super().__init__(n_items, embedding_dim)
        self.pos_emb = nn.Embedding(max_len, embedding_dim)
        self.emb_dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            embedding_dim, num_heads, dim_feedforward=embedding_dim * ffn_factor, dropout=dropout,
            activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, num_blocks, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(embedding_dim)
        # A causal mask as a buffer: built once, not per step (it shows up in CUDA graphs).
        self.register_buffer("causal_mask", torch.triu(
            torch.full((max_len, max_len), float("-inf")), diagonal=1), persistent=False)

    def encode(self, input_ids: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """[B, L, D] hidden states; with `last_only` [B, 1, D], the last position's alone: the
        last block then runs its attention and feed-forward for that one query (what scoring
        the next item needs; the earlier blocks still run every position as keys)."""
        length = input_ids.shape[1]
        pos = torch.arange(length, device=input_ids.device)
        # Positions count from the right so that the most recent item always has the same one.
        pos = self.pos_emb.num_embeddings - length + pos
        x = self.item_emb(input_ids) * self.embedding_dim ** 0.5 + self.pos_emb(pos)
        keep = (input_ids != 0).unsqueeze(-1)
        x = self.emb_dropout(x) * keep
        # Causal and blind to padded keys, so that the output does not depend on how much left
        # padding there is. Every position may still attend to itself: an all-padding row
        # with nothing to attend to would give NaN.
        eye = torch.eye(length, dtype=torch.bool, device=input_ids.device)
        blocked = (input_ids == 0)[:, None, :] & ~eye
        mask = self.causal_mask[-length:, -length:].masked_fill(blocked, float("-inf"))
        mask = mask.repeat_interleave(self.blocks.layers[0].self_attn.num_heads, 0)
        layers = self.blocks.layers
        for layer in layers[:-1] if last_only else layers:
            x = layer(x, src_mask=mask) * keep     # padded positions stay zero between blocks
        if last_only:
            x = self._last_query(layers[-1], x, mask[:, -1:]) * keep[:, -1:]
        return self.final_norm(x)

    @staticmethod
    def _last_query(layer: nn.TransformerEncoderLayer, x: torch.Tensor,
                    mask: torch.Tensor) -> torch.Tensor:
        """A pre-LN encoder layer (norm_first) for the last position only: [B, L, D] -> [B, 1, D]."""
        h = layer.norm1(x)
        attn = layer.self_attn(h[:, -1:], h, h, attn_mask=mask, need_weights=False)[0]
        y = x[:, -1:] + layer.dropout1(attn)
        ff = layer.linear2(layer.dropout(layer.activation(layer.linear1(layer.norm2(y)))))
        return y + layer.dropout2(ff)

    def score_next(self, history: torch.Tensor) -> torch.Tensor:
        return self.logits(self.encode(self.eval_input(history), last_only=True)[:, -1])
