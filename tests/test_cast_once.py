"""The linear layers' weights cast once a step (recsys_core/train/cast_once.py): the same
outputs and gradients as autocast's own casts, bit for bit, with fewer copies; and the training
step that uses it trains exactly as without it."""
import types

import pytest
import torch

from benchmarks.sasrec_encoder import COPIES, Dispatched
from recsys_core.models import MODEL_NAMES, build_model, model_class
from recsys_core.train import TrainConfig
from recsys_core.train.cast_once import CastOnce, linear_parameter_names
from recsys_core.train.setup import build_run
from recsys_core.train.train_step import TrainStep

SHAPE = dict(embedding_dim=32, num_heads=2, num_blocks=2, dropout=0.1, max_len=20,
             mask_prob=0.2, positions="from_start", init_std=0.02)
CASTING = [(m, b) for m in MODEL_NAMES if model_class(m).cast_weights_once
           for b in (["original", "pre_ln"] if m == "sasrec" else ["original"])]


def _encode_twice(name, block="original"):
    """The model's encoder under bf16 autocast as it is and through CastOnce, from the same
    weights and dropout draws: [(output, gradients, copies, operations)] for each."""
    torch.manual_seed(0)
    model = build_model(name, 100, types.SimpleNamespace(**SHAPE, sasrec_block=block))
    model.train()
    ids = torch.randint(1, 101, (8, 20))
    ids[:, :6] = 0
    out = []
    for encode in (model.encode, CastOnce(model)):
        torch.manual_seed(1)
        model.zero_grad(set_to_none=True)
        with Dispatched() as seen:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                hidden = encode(ids)
            hidden.float().square().mean().backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        out.append((hidden.detach(), grads, sum(seen.counts[c] for c in COPIES), seen.counts))
    return model, out


@pytest.mark.parametrize("name,block", CASTING)
def test_casting_once_gives_autocasts_outputs_and_gradients_bit_for_bit(name, block):
    model, [(h0, g0, copies0, _), (h1, g1, copies1, ops1)] = _encode_twice(name, block)
    assert linear_parameter_names(model)
    assert torch.equal(h1, h0)
    assert len(g1) == len(g0) and all(torch.equal(a, b) for a, b in zip(g1, g0))
    # every linear parameter's cast and its gradient's: two multi-tensor copies instead
    assert ops1["_foreach_copy_"] == 2
    assert copies1 <= copies0 - 2 * len(linear_parameter_names(model))


def test_the_mamba_models_do_not_cast_once_because_it_would_change_them():
    """mambapy adds dt_proj's bias in fp32, outside autocast: a bf16 copy of it changes the
    output, so the Mamba models keep autocast's casts (cast_weights_once False)."""
    assert not model_class("mamba4rec").cast_weights_once
    _, [(h0, *_), (h1, *_)] = _encode_twice("mamba4rec")
    assert not torch.equal(h1, h0)


def test_outside_autocast_the_encoder_runs_as_it_is():
    torch.manual_seed(0)
    model = build_model("sasrec", 100, types.SimpleNamespace(**SHAPE, sasrec_block="original"))
    model.eval()
    ids = torch.randint(1, 101, (4, 20))
    with Dispatched() as seen:
        out = CastOnce(model)(ids)
    assert seen.counts["_foreach_copy_"] == 0 and torch.equal(out, model.encode(ids))


@pytest.mark.parametrize("name", ["sasrec", "bert4rec"])
def test_the_bf16_step_trains_exactly_as_with_autocasts_casts(name, monkeypatch, request):
    """The fixed-shape step (run eagerly on the CPU, as the graph would run it) with the
    weights cast once: the same losses and weights after two epochs, bit for bit."""
    from accelerate.state import AcceleratorState
    AcceleratorState._reset_state(True)      # a process-wide singleton: its precision is fixed
    request.addfinalizer(lambda: AcceleratorState._reset_state(True))
    cfg = TrainConfig(dataset="synthetic", synthetic={"n_users": 90, "n_items": 50,
                                                      "n_interactions": 2500, "seed": 3},
                      model=name, max_len=12, embedding_dim=16, num_heads=2, num_blocks=2,
                      batch_size=30, dropout=0.1, wandb_mode="disabled", device="cpu",
                      mixed_precision="bf16", sasrec_block="original")
    runs = []
    for once in (False, True):
        monkeypatch.setattr(model_class(name), "cast_weights_once", once)
        run = build_run(cfg)
        step = TrainStep(cfg, run.model, run.optimizer, run.accelerator, run.split, run.starts,
                         run.ends, use_graph=False, record_losses=True)
        losses = [step.run_epoch(epoch)[0] for epoch in (1, 2)]
        runs.append((step, losses, [p.detach().clone() for p in run.model.parameters()]))
    (plain, l0, w0), (once, l1, w1) = runs
    assert "cast once" in once.describe() and "cast once" not in plain.describe()
    assert l1 == l0 and torch.equal(once.losses, plain.losses)
    assert all(torch.equal(a, b) for a, b in zip(w1, w0))
