"""xLSTM recommender: the mLSTM block stack of `xlstm`'s xLSTMLarge (Beck et al., 2024) over the
item sequence.

Item embedding → dropout → `xLSTMLargeBlockStack` (pre-RMSNorm mLSTM + gated FFN blocks, final
RMSNorm) → dropout → tied output layer, trained causally on every position. The study's model
is the whole xLSTMLarge; here its embedding and untied lm_head give way to our own tied item
embedding (with a padding row and dropout, which xLSTMLarge lacks). Triton kernels on CUDA,
the package's native PyTorch kernels on CPU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from xlstm.xlstm_large.model import xLSTMLargeBlockStack, xLSTMLargeConfig

from recsys_core.models.base import SequentialModel

KERNELS = {
    "cuda": dict(chunkwise_kernel="chunkwise--triton_xl_chunk",
                 sequence_kernel="native_sequence__triton", step_kernel="triton"),
    "cpu": dict(chunkwise_kernel="chunkwise--native_autograd",
                sequence_kernel="native_sequence__native", step_kernel="native"),
}


def kernel_length(length: int, chunk_size: int, triton: bool) -> int:
    """The shortest sequence length >= `length` that the training kernel accepts."""
    if triton and length <= 64:
        # Below 128 the Triton kernel makes the whole sequence one chunk: 16, 32 or 64.
        return max(16, 1 << (length - 1).bit_length())
    return -(-length // chunk_size) * chunk_size


def check_triton_shape(embedding_dim: int, num_heads: int, qk_dim_factor: float,
                       v_dim_factor: float = 1.0) -> None:
    """Shapes the Triton kernels get wrong or refuse, as errors at construction."""
    if num_heads < 2:
        # mlstm_kernels 2.0.6 indexes (batch, head) through stride(1), which torch leaves
        # non-canonical for a size-1 head dimension: every row past the first reads another
        # row's memory (NaN or garbage, no error; seen on an H100, fp32 and bf16, and gone
        # with canonical strides).
        raise ValueError("xlstm on CUDA needs num_heads >= 2 "
                         "(the Triton kernels mis-stride a single head)")
    qk_head_dim = int(embedding_dim * qk_dim_factor) // num_heads
    if qk_head_dim < 16:
        # Otherwise Triton fails at the first step ("... K >= 16"): tl.dot's minimum.
        raise ValueError(f"xlstm on CUDA needs a query/key head dim >= 16, got {qk_head_dim} "
                         f"(embedding_dim {embedding_dim} x {qk_dim_factor} / "
                         f"num_heads {num_heads})")
    v_head_dim = int(embedding_dim * v_dim_factor) // num_heads
    if v_head_dim > 64:
        # Triton 3.6.0's LLVM aborts the whole process (SIGABRT, an assertion in its
        # SLPVectorizer) compiling the chunkwise kernels at value head dims 128 and 256; 64 and
        # below train (H200, bf16: results/benchmarks/xlstm_shapes_h200/).
        raise ValueError(f"xlstm on CUDA needs a value head dim <= 64, got {v_head_dim} "
                         f"(embedding_dim {embedding_dim} / num_heads {num_heads}): "
                         f"use num_heads >= {-(-int(embedding_dim * v_dim_factor) // 64)}")


class XLSTMRec(SequentialModel):
    def __init__(self, n_items: int, embedding_dim: int = 64, num_heads: int = 2,
                 num_blocks: int = 2, dropout: float = 0.2, max_len: int = 50,
                 device_type: str = "cpu", **_):
        super().__init__(n_items, embedding_dim)
        self.triton = device_type == "cuda"
        # Triton: 64, xLSTMLargeConfig's default (longer chunks must be multiples of 64 and
        # divide L). Native CPU kernel: a Python loop over chunks, each chunk a quadratic
        # block, so one chunk up to 64 items (no padding at L = max_len) is the fastest.
        self.chunk_size = 64 if self.triton else min(64, max_len)
        self.config = xLSTMLargeConfig(
            embedding_dim=embedding_dim, num_heads=num_heads, num_blocks=num_blocks,
            vocab_size=n_items + 1, return_last_states=True, mode="train",
            chunk_size=self.chunk_size, **KERNELS["cuda" if self.triton else "cpu"])
        if self.triton:
            check_triton_shape(embedding_dim, num_heads, self.config.qk_dim_factor,
                               self.config.v_dim_factor)
        self.emb_dropout = torch.nn.Dropout(dropout)
        self.blocks = xLSTMLargeBlockStack(self.config)
        self.out_dropout = torch.nn.Dropout(dropout)

    def encode(self, input_ids: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """[B, L, D] hidden states; with `last_only` [B, 1, D], the last position's alone."""
        length = input_ids.shape[1]
        # Left padding up to a length the kernel takes leaves the real positions' outputs as
        # they were: padding embeds to 0, and with no biases in the stack a zero input stays
        # zero and adds nothing to the mLSTM state (k = v = 0).
        padded = kernel_length(length, self.chunk_size, self.triton)
        ids = F.pad(input_ids, (padded - length, 0))
        # Embeddings start at N(0, 1/D) for the tied output; scaled to unit size on input, the
        # scale of xLSTMLarge's own N(0, 1) embedding.
        x = self.emb_dropout(self.item_emb(ids) * self.embedding_dim ** 0.5)
        if not last_only:
            x, _ = self.blocks(x)
            return self.out_dropout(x[:, padded - length:])
        # mLSTMBlock.forward, with the last block's feed-forward and the final norm for the
        # last position only: they act on each position alone (the mLSTM mixes positions).
        *earlier, last = self.blocks.blocks
        for block in earlier:
            x, _ = block(x)
        x = x[:, -1:] + last.mlstm_layer(last.norm_mlstm(x))[0][:, -1:]
        x = x + last.ffn(last.norm_ffn(x))
        return self.out_dropout(self.blocks.out_norm(x))

    def score_next(self, history: torch.Tensor) -> torch.Tensor:
        return self.logits(self.encode(history, last_only=True)[:, -1])
