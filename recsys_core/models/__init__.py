"""Models by name. Each module holds one model; `build_model` constructs it from a config."""
from __future__ import annotations

import importlib

# name -> "module:Class"; imported lazily so that a CPU install never imports what it can't run.
REGISTRY = {
    "pop": "recsys_core.models.pop:Pop",
    "sasrec": "recsys_core.models.sasrec:SASRec",
    "bert4rec": "recsys_core.models.bert4rec:BERT4Rec",
    "gru4rec": "recsys_core.models.gru4rec:GRU4Rec",
    "lstm": "recsys_core.models.lstm:LSTMRec",
    "xlstm": "recsys_core.models.xlstm:XLSTMRec",
    "mamba4rec": "recsys_core.models.mamba4rec:Mamba4Rec",
    "sasmamba": "recsys_core.models.sasmamba:SASMamba",
}
MODEL_NAMES = sorted(REGISTRY)
# Choices of the models' options, here (no torch) so that validating a config imports no model.
POSITIONS = ("from_end", "from_start")      # base.py: where position embeddings count from
SASREC_BLOCKS = ("pre_ln", "original")      # sasrec.py: the block's layout
RNN_DROPOUTS = ("cudnn", "torch")           # gru4rec.py: who drops out between the layers


def shape_problem(name: str, embedding_dim: int, num_heads: int) -> str | None:
    """A width the model's heads cannot split (torch's attention asserts, xLSTM's reshape
    fails at the first step), or None; checked with the config, before any work."""
    widths = {"sasrec": [embedding_dim], "bert4rec": [embedding_dim],
              "sasmamba": [embedding_dim]}
    if name == "xlstm":
        from recsys_core.models.xlstm_shapes import QK_DIM_FACTOR
        widths["xlstm"] = [embedding_dim, int(embedding_dim * QK_DIM_FACTOR)]
    for width in widths.get(name, []):
        if width % num_heads:
            what = "embedding_dim" if width == embedding_dim else f"its query/key width {width}"
            return (f"{name}: {what} must be divisible by num_heads, got embedding_dim "
                    f"{embedding_dim} and num_heads {num_heads}")
    return None


def model_class(name: str):
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(MODEL_NAMES)}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_model(name: str, n_items: int, cfg, device_type: str = "cpu"):
    """cfg: a TrainConfig (or anything with its model-shape attributes). device_type ("cpu" or
    "cuda") lets a model pick device-specific kernels (xLSTM: Triton on CUDA, native on CPU;
    the Mamba models: mamba_ssm's CUDA kernels where installed, else the triton scan on CUDA,
    mambapy on the CPU: models/ssm.py)."""
    model = model_class(name)(
        n_items=n_items, embedding_dim=cfg.embedding_dim, num_heads=cfg.num_heads,
        num_blocks=cfg.num_blocks, dropout=cfg.dropout, max_len=cfg.max_len,
        mask_prob=cfg.mask_prob, ffn_factor=getattr(cfg, "ffn_factor", 4),
        positions=getattr(cfg, "positions", "from_end"),
        sasrec_block=getattr(cfg, "sasrec_block", "pre_ln"), d_state=getattr(cfg, "d_state", 32),
        d_conv=getattr(cfg, "d_conv", 4), expand=getattr(cfg, "expand", 2),
        rnn_dropout=getattr(cfg, "rnn_dropout", "cudnn"), device_type=device_type)
    if getattr(cfg, "init_std", 0) and model.trainable:
        model.init_item_embeddings(cfg.init_std)
    return model


__all__ = ["MODEL_NAMES", "REGISTRY", "build_model", "model_class", "shape_problem"]
