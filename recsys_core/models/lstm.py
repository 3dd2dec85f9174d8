"""LSTM recommender: GRU4Rec's architecture with an LSTM cell (Hochreiter & Schmidhuber, 1997).

Item embedding → dropout → `num_blocks` LSTM layers (hidden size = embedding size) → dropout →
LayerNorm → tied output layer, trained causally on every position. The classic recurrent
baseline that xLSTM extends.
"""
from __future__ import annotations

from torch import nn

from recsys_core.models.gru4rec import GRU4Rec


class LSTMRec(GRU4Rec):
    rnn_class = nn.LSTM
