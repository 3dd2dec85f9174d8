"""SASMamba: SASRec's causal self-attention and a Mamba layer side by side in every block,
mixed per position by a gating network (the hybrid of Alokam, "State-Space Models for Large
Sequence Modeling in Sequential Recommendation", github.com/alokamgnaneswarasai/MambaRec).

SASRec's embedding (item x sqrt(D) + learned position, dropout) → `num_blocks` blocks, each:
  a = causal self-attention(x), m = Mamba(x), g = softmax(W x + b) ∈ [B, L, 2],
  x = FFN(LN(x + dropout(g₀ a + g₁ m)))
(FFN: position-wise feed-forward of width ffn_factor x D with GELU, dropout, residual and
LayerNorm, as in Mamba4Rec) → tied output layer, trained causally on every position. The
seed's settings: d_state 32, d_conv 4, expand 2 (its Mamba layer), D 32-64, L up to 5,000.
Its code mixes the two branches with one learned scalar and attends without a causal mask;
here a gate per position (a two-expert mixture-of-experts gate, zero-initialised: an even mix
at the start) and SASRec's causal, padding-blind attention.

Every row runs with its items first (padding.py), so that the Mamba layers start each sequence
from the zero state; the attention, causal and blind to padded keys, is the same either way.
"""
from __future__ import annotations

import torch
from torch import nn

from recsys_core.models.batch_first_attention import attend
from recsys_core.models.padding import left_to_right_padding, rotate, rotate_back
from recsys_core.models.sasrec import CausalAttentionModel
from recsys_core.models.ssm import ChunkedScoring, FeedForward, mamba_backend, mamba_layer


class HybridBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float, ffn_factor: int, backend: str,
                 **mamba):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.mamba = mamba_layer(dim, backend=backend, **mamba)
        self.gate = nn.Linear(dim, 2)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim, eps=1e-12)
        self.ffn = FeedForward(dim, ffn_factor, dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        attn = attend(self.attn, x, x, bias)
        gate = torch.softmax(self.gate(x), dim=-1)
        mixed = gate[..., :1] * attn + gate[..., 1:] * self.mamba(x)
        return self.ffn(self.norm(x + self.dropout(mixed)))


class SASMamba(ChunkedScoring, CausalAttentionModel):
    def __init__(self, n_items: int, embedding_dim: int = 64, num_heads: int = 2,
                 num_blocks: int = 2, dropout: float = 0.2, max_len: int = 50,
                 ffn_factor: int = 4, positions: str = "from_end", d_state: int = 32,
                 d_conv: int = 4, expand: int = 2, device_type: str = "cpu", **_):
        super().__init__(n_items, embedding_dim, num_heads, dropout, max_len, positions)
        self.mamba_backend = mamba_backend(device_type)
        self.scan_width = expand * embedding_dim * d_state
        self.blocks = nn.ModuleList(
            HybridBlock(embedding_dim, num_heads, dropout, ffn_factor, self.mamba_backend,
                        d_state=d_state, d_conv=d_conv, expand=expand)
            for _ in range(num_blocks))

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:
        # Embedded where the items are (their positions), then rotated.
        index, pad = left_to_right_padding(input_ids)
        ids = input_ids.gather(1, index)
        x = rotate(self.embed(input_ids), pad)
        bias = self.attention_bias(ids, x)
        for block in self.blocks:
            x = block(x, bias)
        return rotate_back(x, pad) * (input_ids != 0).unsqueeze(-1)
