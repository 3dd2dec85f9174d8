"""Which of the project's Triton kernels a GPU run will call, with the specialisation each
first call will have, so that `build_run` can compile them in a thread during its setup
(kernel_device.BackgroundCompile): the fused loss of the training step (fused_ce.py), the
evaluation's rank counts (rank_counts.py) and, with `fused_layer_norm`, the LayerNorm's
(models/fused_layer_norm.py). A kernel guessed wrong is compiled for nothing, and its first
real call compiles it as before; `python -m benchmarks.triton_cold` (its `empty, precompiled`
rows) checks on a GPU that the first calls find theirs."""
from __future__ import annotations

from functools import partial

import torch

from recsys_core import rank_counts
from recsys_core.models.base import SequentialModel
from recsys_core.models import fused_layer_norm
from recsys_core.models.bert4rec import BERT4Rec
from recsys_core.train import fused_ce

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def eval_scores_dtype(model, mixed_precision: str) -> torch.dtype | None:
    """The dtype of the [B, V] scores the evaluation ranks (under Accelerate's autocast): the
    output layer's matmul's, with BERT4Rec's fp32 bias added after it (which promotes); None
    for a model with an output layer of its own."""
    matmul = AUTOCAST_DTYPES.get(mixed_precision, torch.float32)
    logits = type(model).logits
    if logits is SequentialModel.logits:
        return matmul
    if logits is BERT4Rec.logits:
        return torch.promote_types(matmul, model.head_bias.dtype)
    return None


def kernels_to_precompile(cfg, model, split, mixed_precision: str,
                          fixed_step: bool, fused_loss: bool = True) -> dict:
    """name → a call compiling it, for a CUDA run of `model` on `split` (item ids of
    `split.items.dtype`). `fixed_step`: the run trains with train_step.TrainStep, the only
    caller of the fused loss."""
    jobs = {}
    ids = split.items.dtype
    # in the order of their first calls: the training step's (its first warm-up step), then
    # the evaluation's (the first validation), which compiles during the first epoch
    if fixed_step and fused_ce.fused_loss_reason(cfg, model, "cuda", fused_loss) is None:
        jobs[fused_ce.PRECOMPILE_JOB] = partial(
            fused_ce.precompile, model.item_emb.weight.shape[0], model.n_items + 1,
            fused_ce.logits_dtype(mixed_precision), ids)
    for width in fused_layer_norm.fused_widths(model):
        # the kernels' dtype: fp32, as autocast gives LayerNorm (_LayerNorm's custom_fwd)
        jobs[fused_layer_norm.precompile_job(width)] = partial(fused_layer_norm.precompile,
                                                               width, torch.float32)
    scores = eval_scores_dtype(model, mixed_precision)
    if scores is not None:
        # the evaluation's n_valid (train/evaluate.py) over scores of n_items + 1 columns
        jobs[rank_counts.PRECOMPILE_JOB] = partial(rank_counts.precompile, model.n_items + 1,
                                                   split.n_items + 1, scores, ids)
    return jobs
