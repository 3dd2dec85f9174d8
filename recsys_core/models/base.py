"""The one interface every model implements: item ids in, scores over all items out.

Inputs are [B, L] item ids, left padded with 0. `encode` gives a hidden state per position,
`logits` turns hidden states into scores over ids 0..n_items (column 0 is padding and never
recommended). `objective` tells the trainer how to build targets: "causal" (next item at every
position: SASRec, GRU4Rec, LSTM, xLSTM) or "masked" (BERT4Rec's cloze task).
Parameters are counted as embedding (module names starting with `item_emb`/`pos_emb`),
head (`head`) and backbone (everything else), the split of the study's parameter table.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recsys_core.models import POSITIONS


class SequentialModel(nn.Module):
    objective = "causal"
    trainable = True
    # Whether the training step may cast the linear layers' weights to autocast's dtype once
    # a step for the whole encoder (train/cast_once.py): only where that equals autocast's own
    # casts bit for bit (tests/test_cast_once.py; not the Mamba models, whose scan adds
    # dt_proj's bias in fp32).
    cast_weights_once = False

    def __init__(self, n_items: int, embedding_dim: int):
        super().__init__()
        self.n_items = n_items
        self.embedding_dim = embedding_dim
        # Tied output layer: scores are dot products with the item embeddings (SASRec+ recipe).
        self.item_emb = nn.Embedding(n_items + 1, embedding_dim, padding_idx=0)
        # N(0, 1/D): dot products with a LayerNorm'd hidden state start at unit scale (the
        # default N(0, 1) would start the softmax with logits of size ~D).
        self.init_item_embeddings(embedding_dim ** -0.5)

    def init_item_embeddings(self, std: float) -> None:
        """N(0, std²) item embeddings, padding row zero. The published SASRec+/BERT4Rec code
        (Klenitskiy & Vasilev) uses std 0.02, six times less than our default at D=64."""
        nn.init.normal_(self.item_emb.weight, std=std)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor,
                negatives: torch.Tensor | None = None, capacity: int | None = None) -> torch.Tensor:
        """Mean training loss over target positions (targets == 0 are ignored).

        Full softmax over all items by default; with `negatives` (sampled item ids: [K]
        shared by the batch, or [B, L, K], K for each position) a sampled softmax over
        [target, negatives] for very large catalogs.
        Only positions with a target reach the output layer (`scored_positions`; `capacity`
        fixes their number for a CUDA graph). The loss lives in forward() so that
        DistributedDataParallel sees the whole step.
        """
        return self.loss(self.encode(input_ids), targets, negatives, capacity)

    def loss(self, hidden: torch.Tensor, targets: torch.Tensor,
             negatives: torch.Tensor | None = None, capacity: int | None = None) -> torch.Tensor:
        """forward()'s loss from the encoder's [B, L, D] output (the CUDA-graph step calls it
        with its own, possibly compiled, encoder)."""
        rows = scored_rows(targets.flatten(), capacity)    # once: per-position negatives too
        h, t = kept(hidden.flatten(0, -2), rows), kept(targets.flatten(), rows)
        if negatives is None:
            logits = self.logits(h).float()
            total = F.cross_entropy(logits, t, ignore_index=0, reduction="sum")
            # Sum / count rather than mean: a batch with no target gives 0, not NaN.
            return total / (t != 0).sum().clamp(min=1)
        pos = ((h * self.item_emb(t)).sum(-1) + self.output_bias(t))[:, None]
        if negatives.dim() == 1:
            neg = h @ self.item_emb(negatives).T + self.output_bias(negatives)
            negatives = negatives[None, :]
        else:   # each scored position its own negatives, kept with it
            negatives = kept(negatives.flatten(0, -2), rows)
            neg = torch.einsum("nd,nkd->nk", h, self.item_emb(negatives)) + self.output_bias(negatives)
        neg = neg.masked_fill(negatives == t[:, None], float("-inf"))
        logits = torch.cat([pos, neg], 1).float()
        loss = F.cross_entropy(logits, torch.zeros_like(t), reduction="none")
        keep = (t != 0).float()
        return (loss * keep).sum() / keep.sum().clamp(min=1)

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:  # [B, L] -> [B, L, D]
        raise NotImplementedError

    def leave_out_of_compile(self) -> None:
        """Before its encoder is torch.compile'd (`compile_encoder`): mark the parts that
        should run as they are, outside the compiled graphs (none here; xlstm.py)."""

    def embed_items(self, ids: torch.Tensor) -> torch.Tensor:
        """item_emb(ids), looked up with 32-bit ids: on CUDA the embedding's backward sorts the
        ids on all their bits, in half the passes for int32 (8 fewer radix-sort passes a
        Beauty step). The sort is stable either way: the same gradients, summed in the same
        order."""
        return self.item_emb(ids.int())

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:     # [..., D] -> [..., n_items+1]
        return hidden @ self.item_emb.weight[: self.n_items + 1].T

    def output_bias(self, ids: torch.Tensor):
        """Per-item output bias added to the scores of `ids` (none here; BERT4Rec has one)."""
        return 0.0

    def eval_input(self, history: torch.Tensor) -> torch.Tensor:
        """Model input for predicting the item after `history` ([B, L], left padded)."""
        return history

    def score_next(self, history: torch.Tensor) -> torch.Tensor:
        """[B, n_items+1] scores of the item that follows each history."""
        return self.logits(self.encode(self.eval_input(history))[:, -1])

    def param_counts(self) -> dict[str, int]:
        counts = {"embedding": 0, "backbone": 0, "head": 0}
        seen = set()
        for name, p in self.named_parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            part = "embedding" if name.startswith(("item_emb", "pos_emb")) else \
                "head" if name.startswith("head") else "backbone"
            counts[part] += p.numel()
        return {"total": sum(counts.values()), **counts}


def scored_positions(hidden: torch.Tensor, targets: torch.Tensor,
                     capacity: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """([N, D] hidden states, [N] targets) of the positions that have a target.

    The output layer over the whole catalogue is most of a training step, and on short
    histories most positions are padding (Amazon Beauty: 8.8 items per user in windows of
    50), so only positions with a target are scored. Without `capacity` exactly those rows
    are kept. With it, a fixed number of rows (what a CUDA graph needs): the positions with a
    target first, in order, then padding positions, whose target 0 adds no loss and no
    gradient; `capacity` must be at least the batch's number of targets
    (`batches.target_capacity` computes that for a whole run).
    """
    t = targets.flatten()
    rows = scored_rows(t, capacity)
    return kept(hidden.flatten(0, -2), rows), kept(t, rows)


def scored_rows(targets: torch.Tensor, capacity: int | None = None) -> torch.Tensor | None:
    """`scored_positions`' rule over flat [N] targets: the rows kept (a mask, or with
    `capacity` an index, targets first), None for all of them."""
    if capacity is None:
        return targets != 0
    if capacity >= targets.numel():
        return None
    return torch.argsort((targets == 0).to(torch.int32), stable=True)[:capacity]


def kept(x: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """The rows `scored_rows` kept of flat per-position `x` (all of them for None)."""
    return x if rows is None else x[rows]


def position_ids(input_ids: torch.Tensor, n_positions: int, origin: str) -> torch.Tensor:
    """Position index of every column of left-padded [B, L] ids, for a table of n_positions.

    from_end: the last column has the last position, whatever the history's length (the most
    recent item always looks the same); [L] for every row. from_start: the first item of each
    row has position 0, as in right-padded implementations (the published SASRec code), so a
    position also tells how many items came before; [B, L], padding columns at 0.
    """
    length = input_ids.shape[1]
    cols = torch.arange(length, device=input_ids.device)
    if origin == "from_end":
        return n_positions - length + cols
    if origin != "from_start":
        raise ValueError(f"positions={origin!r}; valid: {', '.join(POSITIONS)}")
    pad = (input_ids == 0).sum(1, keepdim=True)
    return (cols - pad).clamp(min=0)


ONE_HOT_MAX = 1 << 25    # elements (128 MB): a batch of 128 x 200 positions of 200 takes 5.1 M


def position_embeddings(table: nn.Embedding, input_ids: torch.Tensor, origin: str) -> torch.Tensor:
    """table(position_ids(input_ids, ...)): [L, D] (from_end) or [B, L, D] (from_start), the
    same values, whose gradient skips the embedding's backward where it trains: on CUDA that
    sorts the ids and sums their segments in about a dozen kernels, for 50 distinct positions
    as for the item table's lookups (the two took 0.17 of the Beauty cell step's 1.47 ms in
    results/benchmarks/rank_counts/beauty_cell_profile_h100_s26.txt). from_end is a slice of
    the table; from_start a one-hot matrix times the table in fp32, out of autocast: exact,
    each row picks one row of the table, and its gradient is one matmul. Where nothing trains
    (an evaluation's thousands of rows), where the one-hot matrix would outgrow ONE_HOT_MAX
    (long sequences), and where fp32 matmuls would run in TF32 and round the table, a lookup
    as before."""
    n, length = table.num_embeddings, input_ids.shape[1]
    trains = torch.is_grad_enabled() and table.weight.requires_grad and length <= n
    if trains and origin == "from_end":
        return table.weight[n - length:]
    pos = position_ids(input_ids, n, origin)
    if not trains or pos.numel() * n > ONE_HOT_MAX or \
            (input_ids.is_cuda and torch.backends.cuda.matmul.allow_tf32):
        return table(pos.int())
    one_hot = (pos[..., None] == torch.arange(n, device=pos.device)).float()
    with torch.autocast(pos.device.type, enabled=False):
        return one_hot @ table.weight

