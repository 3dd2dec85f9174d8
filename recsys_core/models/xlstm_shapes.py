"""The xLSTM shapes the Triton kernels get wrong or refuse, checked without importing xlstm: the
model checks them at construction on CUDA, and the launcher for every GPU cell of a grid before
anything is submitted (a sweep of 54 cells should not fail 54 times in the queue)."""
from __future__ import annotations

# xLSTMLargeConfig's defaults, which XLSTMRec keeps: query/key and value dims per embedding dim.
QK_DIM_FACTOR = 0.5
V_DIM_FACTOR = 1.0


def check_triton_shape(embedding_dim: int, num_heads: int, qk_dim_factor: float = QK_DIM_FACTOR,
                       v_dim_factor: float = V_DIM_FACTOR) -> None:
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
