"""Mamba4Rec: Mamba blocks in place of the Transformer block (Liu et al., 2024, "Mamba4Rec:
Towards Efficient Sequential Recommendation with Selective State Space Models").

Item embedding → dropout → LayerNorm → `num_blocks` blocks, each: Mamba layer → dropout →
residual → LayerNorm → position-wise feed-forward (ffn_factor x D, GELU, dropout, residual,
LayerNorm) → tied output layer, trained causally on every position with the full-softmax CE
(Mamba4Rec's loss_type CE). No positions: the scan is ordered. The paper's settings (its
config.yaml): D 64, 1 layer, dropout 0.2, d_state 32, d_conv 4, expand 2, batch 2048, Adam
1e-3, L 200 on ML-1M and 50 on Amazon. Two departures from its code: one block keeps its
residual too (the code drops it when num_layers is 1), and the Mamba layers keep their own
initialisation (Δ bias with softplus(Δ) in [0.001, 0.1]) rather than RecBole's N(0, 0.02)
over every linear layer, which zeroes that bias.

Sequences are left padded; the Mamba layers see each row with its items first
(padding.py), as RecBole's right-padded batches are in the original.
"""
from __future__ import annotations

import torch
from torch import nn

from recsys_core.models.base import SequentialModel
from recsys_core.models.padding import left_to_right_padding, rotate_back
from recsys_core.models.ssm import ChunkedScoring, FeedForward, mamba_backend, mamba_layer


class MambaBlock(nn.Module):
    """Mamba4Rec's MambaLayer: FFN(LN(x + dropout(mamba(x))))."""

    def __init__(self, dim: int, dropout: float, ffn_factor: int, backend: str, **mamba):
        super().__init__()
        self.mamba = mamba_layer(dim, backend=backend, **mamba)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim, eps=1e-12)
        self.ffn = FeedForward(dim, ffn_factor, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.norm(x + self.dropout(self.mamba(x))))


class Mamba4Rec(ChunkedScoring, SequentialModel):
    def __init__(self, n_items: int, embedding_dim: int = 64, num_blocks: int = 1,
                 dropout: float = 0.2, ffn_factor: int = 4, d_state: int = 32, d_conv: int = 4,
                 expand: int = 2, device_type: str = "cpu", **_):
        super().__init__(n_items, embedding_dim)
        self.mamba_backend = mamba_backend(device_type)
        self.scan_width = expand * embedding_dim * d_state
        self.emb_dropout = nn.Dropout(dropout)
        self.emb_norm = nn.LayerNorm(embedding_dim, eps=1e-12)
        self.blocks = nn.ModuleList(
            MambaBlock(embedding_dim, dropout, ffn_factor, self.mamba_backend,
                       d_state=d_state, d_conv=d_conv, expand=expand)
            for _ in range(num_blocks))

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:
        index, pad = left_to_right_padding(input_ids)
        x = self.emb_norm(self.emb_dropout(self.embed_items(input_ids.gather(1, index))))
        for block in self.blocks:
            x = block(x)
        return rotate_back(x, pad) * (input_ids != 0).unsqueeze(-1)
