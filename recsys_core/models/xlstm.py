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
from recsys_core.models.xlstm_shapes import check_triton_shape

KERNELS = {
    "cuda": dict(chunkwise_kernel="chunkwise--triton_xl_chunk",
                 sequence_kernel="native_sequence__triton", step_kernel="triton"),
    "cpu": dict(chunkwise_kernel="chunkwise--native_autograd",
                sequence_kernel="native_sequence__native", step_kernel="native"),
}


# CUDA's largest grid z. The Triton mLSTM kernels launch (chunks × batch × heads) programs
# there: at L 1024 (16 chunks of 64), 2 heads and the study's evaluation batch of 2,048 users
# that is 65,536, one too many, and the launch fails with "Triton Error [CUDA]: invalid
# argument" (session 18, study-long's xLSTM cells at L 1024).
GRID_Z = 65_535


def kernel_length(length: int, chunk_size: int, triton: bool) -> int:
    """The shortest sequence length >= `length` that the training kernel accepts."""
    if triton and length <= 64:
        # Below 128 the Triton kernel makes the whole sequence one chunk: 16, 32 or 64.
        return max(16, 1 << (length - 1).bit_length())
    return -(-length // chunk_size) * chunk_size


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

    def leave_out_of_compile(self) -> None:
        """The mLSTM kernels run outside the compiled encoder, between its graphs. Traced,
        their autograd Function puts its saved scalars in the graph as CPU tensors (mlstm_kernels
        2.0.6 keeps qk_scale, chunk_size and eps as torch.tensor(...)), and a graph with CPU
        kernels makes Inductor test the CPU's vector instructions once per process: ten
        `python -c "import torch; ..."` subprocesses, 23 of the 28 s that an H100 process took
        to compile the encoder with Inductor's caches warm; 3.2 s with the kernels left out.
        Under the step's CUDA graph the epoch is the same (results/benchmarks/compile_reuse/).
        Once per model (a resumed run builds its step again)."""
        if getattr(self, "_kernels_left_out", False):
            return
        for block in self.blocks.blocks:
            backend = block.mlstm_layer.mlstm_backend
            backend.forward = torch.compiler.disable(backend.forward)
        self._kernels_left_out = True

    def batch_rows(self, length: int) -> int | None:
        """The most sequences of this length one kernel launch takes (None: no limit, the
        CPU's kernels)."""
        if not self.triton:
            return None
        chunks = -(-kernel_length(length, self.chunk_size, True) // self.chunk_size)
        return GRID_Z // (chunks * self.config.num_heads)

    def encode(self, input_ids: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """[B, L, D] hidden states; with `last_only` [B, 1, D], the last position's alone."""
        rows = self.batch_rows(input_ids.shape[1])
        if rows is not None and input_ids.shape[0] > rows:
            return torch.cat([self._encode(part, last_only) for part in input_ids.split(rows)])
        return self._encode(input_ids, last_only)

    def _encode(self, input_ids: torch.Tensor, last_only: bool) -> torch.Tensor:
        length = input_ids.shape[1]
        # Left padding up to a length the kernel takes leaves the real positions' outputs as
        # they were: padding embeds to 0, and with no biases in the stack a zero input stays
        # zero and adds nothing to the mLSTM state (k = v = 0).
        padded = kernel_length(length, self.chunk_size, self.triton)
        ids = F.pad(input_ids, (padded - length, 0))
        # Embeddings start at N(0, 1/D) for the tied output; scaled to unit size on input, the
        # scale of xLSTMLarge's own N(0, 1) embedding.
        x = self.emb_dropout(self.embed_items(ids) * self.embedding_dim ** 0.5)
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
