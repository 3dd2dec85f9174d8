"""GRU4Rec: a recurrent network over the item sequence (Hidasi et al., 2016).

Item embedding → dropout → a stack of `num_blocks` GRU layers (hidden size = embedding size) →
dropout → LayerNorm → tied output layer. Trained on every position with the same full-softmax
cross-entropy as SASRec (the GRU4Rec+CE recipe), not the original session-parallel BPR/TOP1.
`LSTMRec` (lstm.py) is the same model with an LSTM cell.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recsys_core.models.base import SequentialModel
from recsys_core.models.gru_backward import backward_choice, gru_layer, own_backward_fits
from recsys_core.models.padding import left_to_right_padding, rotate_back


def run_rnn(rnn: nn.Module, x: torch.Tensor, own_backward: bool = False) -> torch.Tensor:
    """The recurrence in fp32 (cuDNN's TF32 default), also under bf16 autocast: at the study's
    sizes cuDNN's fp32 kernels are faster than its half-precision ones (ML-1M shape, 2 layers,
    D 64, batch 128, L 200, forward + backward on an H200: GRU 2.26 vs 3.00 ms a step, LSTM
    2.23 vs 2.93; `python -m benchmarks.rnn_precision`, results/benchmarks/rnn_precision.json).
    `own_backward`: a GRU whose layers are one-layer modules trains through gru_backward.py
    (cuDNN's forward, the project's backward) instead of cuDNN's backward."""
    with torch.autocast(x.device.type, enabled=False):
        x = x.float()
        # (a compiled encoder keeps cuDNN's: Dynamo would trace the autograd.Function)
        if own_backward and rnn.training and torch.is_grad_enabled() and \
                not torch.compiler.is_compiling() and takes_own_backward(rnn):
            return rnn(x, layer_call=gru_layer)[0] if isinstance(rnn, StackedRNN) else \
                gru_layer(rnn, x)
        return rnn(x)[0]


def takes_own_backward(rnn: nn.Module) -> bool:
    """Whether every layer of `rnn` (one module, or StackedRNN's) fits gru_backward's path."""
    return all(map(own_backward_fits, rnn.layers if isinstance(rnn, StackedRNN) else [rnn]))


class StackedRNN(nn.Module):
    """`num_layers` one-layer RNNs with torch's dropout between them: the multi-layer RNN of
    PyTorch (the same parameters, drawn in the same order; on the CPU the same outputs, bit for
    bit), except that on the GPU the dropout between layers is torch's, drawn from the CUDA
    generator a checkpoint saves, not cuDNN's: cuDNN keeps its dropout state to itself and
    seeds it anew in a resumed process, so a resumed GRU4Rec/LSTM of 2 layers and dropout > 0
    went its own way on an H200 (results/benchmarks/resume_check_h200/rnn_dropout)."""

    def __init__(self, rnn_class: type[nn.RNNBase], size: int, num_layers: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(rnn_class(size, size, batch_first=True)
                                    for _ in range(num_layers))
        self.dropout = dropout

    def forward(self, x: torch.Tensor, layer_call=None) -> tuple[torch.Tensor, None]:
        """`layer_call(layer, x)` runs a layer where given (gru_backward.gru_layer)."""
        for i, layer in enumerate(self.layers):
            if i:
                x = F.dropout(x, self.dropout, self.training)
            x = layer_call(layer, x) if layer_call else layer(x)[0]
        return x, None


class GRU4Rec(SequentialModel):
    rnn_class: type[nn.RNNBase] = nn.GRU

    def __init__(self, n_items: int, embedding_dim: int = 64, num_blocks: int = 1,
                 dropout: float = 0.2, rnn_dropout: str = "cudnn", device_type: str = "cpu",
                 **_):
        super().__init__(n_items, embedding_dim)
        choice = backward_choice(device_type)
        self.emb_dropout = nn.Dropout(dropout)
        if rnn_dropout == "torch" and num_blocks > 1 and dropout > 0:
            self.rnn = StackedRNN(self.rnn_class, embedding_dim, num_blocks, dropout)
        else:
            self.rnn = self.rnn_class(embedding_dim, embedding_dim, num_layers=num_blocks,
                                      batch_first=True,
                                      dropout=dropout if num_blocks > 1 else 0.0)
        self.out_dropout = nn.Dropout(dropout)
        self.final_norm = nn.LayerNorm(embedding_dim)
        # the GRU's backward: cuDNN's, or on CUDA the project's own where its layers allow
        # (gru_backward.py; RECSYS_GRU_BACKWARD=cudnn keeps cuDNN's)
        self.own_backward = choice == "triton" and takes_own_backward(self.rnn)

    @property
    def gru_backward(self) -> str | None:
        """Which backward trains the recurrence (the trainer writes it into result.json)."""
        if self.rnn_class is not nn.GRU:
            return None
        return "triton" if self.own_backward else "cudnn"

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:
        # Each row rotated so that its items come first (padding.py: why), which also keeps
        # cuDNN's fused kernel.
        index, pad = left_to_right_padding(input_ids)
        ids = input_ids.gather(1, index)
        # Embeddings start at N(0, 1/D) for the tied output; scaled to unit size for the input.
        x = self.emb_dropout(self.embed_items(ids) * self.embedding_dim ** 0.5)
        out = run_rnn(self.rnn, x, self.own_backward)
        out = rotate_back(self.out_dropout(out), pad)
        return self.final_norm(out) * (input_ids != 0).unsqueeze(-1)
