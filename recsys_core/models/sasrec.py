"""SASRec: a causal Transformer over the item sequence (Kang & McAuley, 2018).

Trained on every position with full-softmax cross-entropy over all items (the SASRec+ recipe of
Klenitskiy & Vasilev, 2023) by the trainer; learned positions, dropout, and one of two blocks:
- `pre_ln` (default): PyTorch's pre-LayerNorm encoder layer (residual stream left
  unnormalised, feed-forward ffn_factor·D with GELU);
- `original`: the block of the SASRec paper's code, which the published SASRec+ code keeps:
  only the attention's query is normalised, and both residuals add the *normalised* input
  (the raw stream never passes a block); feed-forward ffn_factor·D with ReLU; LayerNorm eps
  1e-8; every linear layer and the positions drawn from N(0, 0.02²).
"""
from __future__ import annotations

import torch
from torch import nn

from recsys_core.models import SASREC_BLOCKS as BLOCKS
from recsys_core.models.base import SequentialModel, position_embeddings
from recsys_core.models.batch_first_attention import attend, attention_bias, compute_dtype


class OriginalBlock(nn.Module):
    """Kang & McAuley's block: q = LN(x); x = q + attention(q, x, x); h = LN(x); h + FFN(h)."""

    def __init__(self, dim: int, heads: int, dropout: float, ffn_factor: int):
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim, eps=1e-8)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ffn_norm = nn.LayerNorm(dim, eps=1e-8)
        self.ffn = nn.Sequential(nn.Linear(dim, dim * ffn_factor), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(dim * ffn_factor, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, bias: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """[B, L, D] -> [B, L, D]; with `last_only` (bias already [B, 1, 1, L]) the last
        query alone -> [B, 1, D]. `bias`: attention_bias's (batch_first_attention.py)."""
        q = self.attn_norm(x)
        if last_only:
            q = q[:, -1:]
        x = q + attend(self.attn, q, x, bias)
        h = self.ffn_norm(x)
        return h + self.ffn(h)


class CausalAttentionModel(SequentialModel):
    """What SASRec's causal self-attention needs, shared with the hybrids built on it
    (sasmamba.py): learned positions, the embedding of a window, the causal mask."""

    def __init__(self, n_items: int, embedding_dim: int, num_heads: int, dropout: float,
                 max_len: int, positions: str):
        super().__init__(n_items, embedding_dim)
        self.positions = positions
        self.num_heads = num_heads
        self.pos_emb = nn.Embedding(max_len, embedding_dim)
        self.emb_dropout = nn.Dropout(dropout)
        # A causal mask as a buffer: built once, not per step (it shows up in CUDA graphs).
        self.register_buffer("causal_mask", torch.triu(
            torch.full((max_len, max_len), float("-inf")), diagonal=1), persistent=False)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[B, L, D]: item embedding x sqrt(D) + position, dropout; padding positions zero."""
        pos = position_embeddings(self.pos_emb, input_ids, self.positions)
        x = self.embed_items(input_ids) * self.embedding_dim ** 0.5 + pos
        return self.emb_dropout(x) * (input_ids != 0).unsqueeze(-1)

    def attention_bias(self, input_ids: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """[B, 1, L, L], the mask of batch_first_attention.attend, in the dtype attention on
        `x` runs in."""
        length = input_ids.shape[1]
        return attention_bias(self.causal_mask[-length:, -length:], input_ids, compute_dtype(x))

    def attention_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """attention_bias's mask as nn.MultiheadAttention takes it: [B·heads, L, L], fp32."""
        batch, length = input_ids.shape
        bias = attention_bias(self.causal_mask[-length:, -length:], input_ids, torch.float32)
        return bias.expand(batch, self.num_heads, length, length).reshape(-1, length, length)


class SASRec(CausalAttentionModel):
    cast_weights_once = True

    def __init__(self, n_items: int, embedding_dim: int = 64, num_heads: int = 2,
                 num_blocks: int = 2, dropout: float = 0.2, max_len: int = 50,
                 ffn_factor: int = 4, positions: str = "from_end", sasrec_block: str = "pre_ln",
                 **_):
        if sasrec_block not in BLOCKS:
            raise ValueError(f"sasrec_block={sasrec_block!r}; valid: {', '.join(BLOCKS)}")
        super().__init__(n_items, embedding_dim, num_heads, dropout, max_len, positions)
        self.block = sasrec_block
        if sasrec_block == "pre_ln":
            # nn.TransformerEncoder starts every layer as a copy of this one (as it always has
            # here: the default model keeps its weights and checkpoints).
            layer = nn.TransformerEncoderLayer(
                embedding_dim, num_heads, dim_feedforward=embedding_dim * ffn_factor,
                dropout=dropout, activation="gelu", batch_first=True, norm_first=True)
            self.blocks = nn.TransformerEncoder(layer, num_blocks, enable_nested_tensor=False)
            self.final_norm = nn.LayerNorm(embedding_dim)
        else:
            self.blocks = nn.ModuleList(OriginalBlock(embedding_dim, num_heads, dropout, ffn_factor)
                                        for _ in range(num_blocks))
            self.final_norm = nn.LayerNorm(embedding_dim, eps=1e-8)
            for module in self.modules():
                if isinstance(module, nn.Linear):       # incl. the attention's output projection
                    nn.init.normal_(module.weight, std=0.02)
                    nn.init.zeros_(module.bias)
            nn.init.normal_(self.pos_emb.weight, std=0.02)

    def encode(self, input_ids: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """[B, L, D] hidden states; with `last_only` [B, 1, D], the last position's alone: the
        last block then runs its attention and feed-forward for that one query (the earlier
        blocks still run every position as keys)."""
        x = self.embed(input_ids)
        if self.block == "pre_ln":
            layers, mask = self.blocks.layers, self.attention_mask(input_ids)
            last_mask = mask[:, -1:]
        else:
            layers, mask = self.blocks, self.attention_bias(input_ids, x)
            last_mask = mask[:, :, -1:]
        keep = (input_ids != 0).unsqueeze(-1)
        for i, layer in enumerate(layers):
            if last_only and i == len(layers) - 1:
                x = self._last_query(layer, x, last_mask) * keep[:, -1:]
            else:
                x = layer(x, mask) * keep     # padded positions stay zero between blocks
        return self.final_norm(x)

    @staticmethod
    def _last_query(layer: nn.Module, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """A block for the last position only: [B, L, D] -> [B, 1, D]."""
        if isinstance(layer, OriginalBlock):
            return layer(x, mask, last_only=True)
        h = layer.norm1(x)      # a pre-LN encoder layer (norm_first)
        attn = layer.self_attn(h[:, -1:], h, h, attn_mask=mask, need_weights=False)[0]
        y = x[:, -1:] + layer.dropout1(attn)
        ff = layer.linear2(layer.dropout(layer.activation(layer.linear1(layer.norm2(y)))))
        return y + layer.dropout2(ff)

    def score_next(self, history: torch.Tensor) -> torch.Tensor:
        return self.logits(self.encode(self.eval_input(history), last_only=True)[:, -1])
