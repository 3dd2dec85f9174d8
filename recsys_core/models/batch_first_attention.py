"""Multi-head attention in the batch-first layout, on nn.MultiheadAttention's own parameters.

nn.MultiheadAttention(batch_first=True) turns its inputs sequence-first ([L, B, D]) and its
output back, and makes each of those layouts contiguous; its float mask, [B·heads, L, L] in
fp32, is cast to the attention's bf16 (and on CUDA padded to 8-aligned rows for torch's
memory-efficient kernel) in every block of every step. On a GPU each of those copies is a
kernel of the CUDA-graph step.

`attend` runs the same projections and `scaled_dot_product_attention` on [B, L, heads, d]
views, with the module's own weights, so checkpoints are unchanged and the outputs are the
same (bit for bit on the CPU: tests). `attention_bias` builds the mask once a step, in the
dtype the attention will run in, [B, 1, L, L] for every head, in rows of a multiple of 8.
SASRec's `original` block (the study's) and SASMamba's hybrid block use them; the pre-LN
layers stay nn.TransformerEncoderLayer's. At the Beauty cell's shape (2 blocks, one head), an
encoder's forward and backward under bf16 autocast dispatches 232 operations instead of 257,
77 copies instead of 94 (CPU; `python -m benchmarks.sasrec_encoder`,
results/benchmarks/sasrec_encoder/).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ALIGN = 8   # the memory-efficient kernel's alignment of a mask's rows (elements)


def attend(mha: nn.MultiheadAttention, query: torch.Tensor, key_value: torch.Tensor,
           bias: torch.Tensor) -> torch.Tensor:
    """mha(query, key_value, key_value, attn_mask=bias) for batch-first [B, Lq, D] and
    [B, L, D] inputs and an additive `bias` broadcastable to [B, heads, Lq, L]."""
    batch, length, dim = key_value.shape
    heads, rows = mha.num_heads, query.shape[1]
    width = dim // heads
    if query is key_value:      # self-attention: one projection for q, k and v
        qkv = F.linear(query, mha.in_proj_weight, mha.in_proj_bias)
        q, k, v = qkv.view(batch, length, 3, heads, width).unbind(2)
    else:                       # a query of its own (SASRec's normalised one), as torch splits
        (w_q, w_kv), (b_q, b_kv) = (t.split([dim, 2 * dim]) for t in
                                    (mha.in_proj_weight, mha.in_proj_bias))
        q = F.linear(query, w_q, b_q).view(batch, rows, heads, width)
        k, v = F.linear(key_value, w_kv, b_kv).view(batch, length, 2, heads, width).unbind(2)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=bias,
        dropout_p=mha.dropout if mha.training else 0.0)
    return mha.out_proj(out.transpose(1, 2).reshape(batch, rows, dim))


def attention_bias(causal: torch.Tensor, input_ids: torch.Tensor,
                   dtype: torch.dtype) -> torch.Tensor:
    """[B, 1, L, L] additive mask of `dtype` from [L, L] `causal` (0 allowed, -inf not):
    causal and blind to padded keys, so that the output does not depend on how much padding
    there is. Every position may still attend to itself: an all-padding row with nothing to
    attend to would give NaN. Rows are laid out ALIGN-wide, so the kernel copies nothing."""
    batch, length = input_ids.shape
    eye = torch.eye(length, dtype=torch.bool, device=input_ids.device)
    blocked = (input_ids == 0)[:, None, :] & ~eye
    padded = -(-length // ALIGN) * ALIGN
    bias = torch.empty(batch, 1, length, padded, dtype=dtype, device=input_ids.device)
    bias = bias[..., :length]
    bias[:, 0].copy_(causal).masked_fill_(blocked, float("-inf"))
    return bias


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype attention on `x`'s device runs in: autocast's where it is on."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
