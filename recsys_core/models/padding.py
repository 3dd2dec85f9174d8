"""Left padding made harmless for models that carry a state along the sequence (GRU4Rec, LSTM,
Mamba): each row is rotated so that its items come first, run causally, and rotated back.

Run over left padding, a recurrence or a state-space scan would reach the first item in a state
that depends on how much padding there was (biases, a convolution's bias, an SSM driven by the
padding's non-zero activations). Rotated, every sequence starts from the zero state, no lengths
go to the host (no packing: fixed shapes for CUDA graphs), and the padding runs after the last
item, where its outputs are never used.
"""
from __future__ import annotations

import torch


def rotate(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Each row b of x ([B, L] or [B, L, D]) rotated left by shift[b] ([B, 1]) positions."""
    length = x.shape[1]
    index = (torch.arange(length, device=x.device) + shift) % length
    if x.dim() == 3:
        index = index.unsqueeze(-1).expand(-1, -1, x.shape[-1])
    return x.gather(1, index)


def left_to_right_padding(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index [B, L] that rotates each left-padded row so that its items come first, and the
    count of padding per row [B, 1]. x.gather(1, index) rotates; `rotate_back` undoes it."""
    length = ids.shape[1]
    pad = (ids == 0).sum(1, keepdim=True)
    index = (torch.arange(length, device=ids.device) + pad) % length
    return index, pad


def rotate_back(x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """[B, L, D] outputs of rotated rows put back where their left-padded inputs were."""
    return rotate(x, -pad)
