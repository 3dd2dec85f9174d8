"""The parts of the CUDA-graph training step that a CPU can check: the fixed-shape epoch (same
batches as the eager loop, last batch padded), padding that changes neither loss nor
gradients, the eager run of the step body against the trainer's loop, the optimiser choices
and the dispatch (no graph off CUDA), and the fused loss under Triton's interpreter. The graph
itself is compared with the eager step on the GPU by `python -m benchmarks.gpu_epoch`
(results/benchmarks/gpu_notes.md)."""
import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recsys_core.data import LeaveOneOut, load_dataset
from recsys_core.models import build_model
from recsys_core.train import TrainConfig
from recsys_core.train.batches import (epoch_batches, padded_epoch_batches, training_batch,
                                       with_empty_window)
from recsys_core.train.hooks import DebugHooks
from recsys_core.train.loop import train_epoch
from recsys_core.train.optim import lr_on_device, make_optimizer, make_scheduler
from recsys_core.train.setup import build_run, make_accelerator, seed_everything
from recsys_core.train.step_choice import build_train_step, graph_unsupported_reason
from recsys_core.train.train_step import TrainStep

TINY = dict(dataset="synthetic", synthetic={"n_users": 90, "n_items": 50,
                                            "n_interactions": 2500, "seed": 3},
            max_len=12, embedding_dim=16, num_heads=2, num_blocks=1, batch_size=30,
            dropout=0.0, wandb_mode="disabled", device="cpu")


def setup(model_name="sasrec", **kw):
    cfg = TrainConfig(**{**TINY, "model": model_name, **kw})
    acc = make_accelerator(cfg)
    data = load_dataset(cfg.dataset, synthetic=cfg.synthetic)
    split = LeaveOneOut.from_data(data, acc.device)
    seed_everything(cfg.seed)
    model = build_model(cfg.model, data.n_items, cfg, "cpu")
    starts, ends = split.train_windows(cfg.max_len, cfg.train_windows)
    return cfg, acc, split, model, starts, ends


def test_padded_epoch_is_the_eager_epoch_plus_padding():
    for n, b in [(100, 32), (96, 32), (5, 32), (1, 1)]:
        eager = epoch_batches(n, b, 42, 3, 0, 1, "cpu")
        rows = padded_epoch_batches(n, b, 42, 3, "cpu")
        assert rows.shape == (math.ceil(n / b), b)
        flat = rows.flatten()
        assert torch.equal(flat[:n], torch.cat(eager))
        assert (flat[n:] == n).all()


def test_empty_window_is_all_padding_with_no_target():
    cfg, acc, split, model, starts, ends = setup()
    s, e = with_empty_window(starts, ends)
    n = len(starts)
    for m in ("sasrec", "bert4rec"):
        model = build_model(m, split.n_items, TrainConfig(**{**TINY, "model": m}), "cpu")
        inputs, targets, _ = training_batch(cfg, model, split, s[[n, n]], e[[n, n]])
        assert (inputs == 0).all() and (targets == 0).all()


@pytest.mark.parametrize("model_name", ["sasrec", "bert4rec", "gru4rec", "lstm", "xlstm",
                                        "mamba4rec", "sasmamba"])
def test_padding_changes_neither_loss_nor_gradients(model_name):
    cfg, acc, split, model, starts, ends = setup(model_name)
    model.eval()     # no dropout: the two passes must see the same function
    s, e = with_empty_window(starts, ends)
    idx = torch.arange(7)
    padded = torch.cat([idx, torch.full((25,), len(starts))])
    torch.manual_seed(0)
    batch = training_batch(cfg, model, split, s[idx], e[idx])
    torch.manual_seed(0)
    batch_p = training_batch(cfg, model, split, s[padded], e[padded])
    if model.objective == "masked":       # the masks are random: use the unpadded rows' mask
        inputs = torch.cat([batch[0], batch_p[0][7:]])
        targets = torch.cat([batch[1], batch_p[1][7:]])
        batch_p = (inputs, targets, None)
    assert torch.equal(batch_p[0][:7], batch[0]) and torch.equal(batch_p[1][:7], batch[1])
    assert (batch_p[1][7:] == 0).all()
    grads = []
    for inputs, targets, neg in (batch, batch_p):
        model.zero_grad(set_to_none=True)
        loss = model(inputs, targets, neg)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()
                                      if p.grad is not None]))
    (l1, g1), (l2, g2) = grads
    torch.testing.assert_close(l2, l1, rtol=1e-5, atol=1e-6)
    assert len(g1) == len(g2)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("model_name,precision", [("sasrec", "no"), ("gru4rec", "no"),
                                                  ("sasrec", "bf16"), ("mamba4rec", "no"),
                                                  ("sasmamba", "bf16")])
def test_eager_fixed_shape_step_trains_like_the_loop(model_name, precision, request):
    """The step body (what the graph captures), run eagerly, gives the trainer loop's losses
    and weights: same batches, padded last batch, clipping, optimiser, sums; under bf16
    autocast too (the loop's model runs under Accelerate's autocast, and so must the step)."""
    from accelerate.state import AcceleratorState
    AcceleratorState._reset_state(True)      # a process-wide singleton: its precision is fixed
    request.addfinalizer(lambda: AcceleratorState._reset_state(True))
    cfg = TrainConfig(**{**TINY, "model": model_name, "grad_clip": 0.5,
                         "mixed_precision": precision})
    loop, twin = build_run(cfg), build_run(cfg)      # the same seed: the same weights
    assert loop.accelerator.mixed_precision == precision
    assert len(loop.starts) % cfg.batch_size != 0       # the last batch is partial
    results = []
    for epoch in (1, 2):
        a = train_epoch(loop, epoch)
        step = TrainStep(cfg, twin.model, twin.optimizer, twin.accelerator, twin.split,
                         twin.starts, twin.ends, use_graph=False, record_losses=True)
        b = step.run_epoch(epoch)
        assert step.mode == "eager" and b[2] == a[2] == len(loop.starts)
        assert (step.losses > 0).all()
        results.append((a, b))
    for a, b in results:
        assert b[0] == pytest.approx(a[0], rel=1e-5) and b[1] == pytest.approx(a[1], rel=1e-5)
    # Weights to float noise, amplified by Adam where a gradient is ~0 in exact arithmetic
    # (the attention's key bias: softmax ignores it), which lr=1e-3 per step bounds.
    for p, q in zip(loop.model.parameters(), twin.model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=2e-4)


def test_no_graph_off_cuda_and_for_fault_injection():
    cfg, acc, split, model, starts, ends = setup()
    opt = make_optimizer(cfg, model, cfg.lr)
    assert "not cuda" in graph_unsupported_reason(cfg, acc)
    assert build_train_step(cfg, DebugHooks(), model, opt, acc, split, starts, ends) is None
    assert build_run(cfg).train_step is None
    cfg.cuda_graphs = False
    assert graph_unsupported_reason(cfg, acc) == "cuda_graphs=false"


def test_which_step_several_gpus_get(monkeypatch):
    """Several GPUs: the fixed-shape step eagerly unless multi_gpu_graph, then the graph where
    the process group can capture collectives (NCCL >= 2.9.6, async error handling off before
    it started, no blocking wait); else eagerly with the reason. The eager loop where the
    fixed-shape step does not run (cuda_graphs off, fault injection)."""
    from types import SimpleNamespace

    from recsys_core.train.graph_capture import NCCL_GRAPH_ENV
    from recsys_core.train.step_choice import step_kind
    gpus = SimpleNamespace(device=torch.device("cuda"), num_processes=2)
    backend, version = ["nccl"], [(2, 21, 5)]
    monkeypatch.setattr(torch.distributed, "get_backend", lambda: backend[0])
    monkeypatch.setattr(torch.cuda.nccl, "version", lambda: version[0])
    for k, v in NCCL_GRAPH_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("NCCL_BLOCKING_WAIT", raising=False)
    cfg = TrainConfig(**{**TINY, "num_processes": 2})

    def why(**kw):
        c = cfg.model_copy(update=kw)
        return step_kind(c, gpus), graph_unsupported_reason(c, gpus)

    assert why() == ("eager", "2 processes and multi_gpu_graph=false")
    assert why(multi_gpu_graph=True) == ("graph", None)
    monkeypatch.setenv("NCCL_BLOCKING_WAIT", "1")
    assert why(multi_gpu_graph=True) == ("eager", "NCCL_BLOCKING_WAIT=1 (a blocking wait syncs "
                                                  "inside the capture)")
    monkeypatch.delenv("NCCL_BLOCKING_WAIT")
    monkeypatch.setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "3")
    kind, reason = why(multi_gpu_graph=True)
    assert kind == "eager" and reason.startswith("TORCH_NCCL_ASYNC_ERROR_HANDLING=3 when")
    monkeypatch.setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "0")
    version[0] = (2, 9, 5)
    assert why(multi_gpu_graph=True)[1] == "NCCL (2, 9, 5) cannot capture collectives (needs >= 2.9.6)"
    version[0], backend[0] = (2, 21, 5), "gloo"
    assert why(multi_gpu_graph=True)[1] == "process group backend gloo, not nccl"
    backend[0] = "nccl"
    assert why(multi_gpu_graph=True, cuda_graphs=False) == (None, "cuda_graphs=false")
    cfg = cfg.model_copy(update={"multi_gpu_graph": True})
    assert step_kind(cfg, gpus, DebugHooks(inject_fault="raise@1")) is None


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")
def test_cpu_optimiser_unchanged_and_device_lr():
    cfg, acc, split, model, starts, ends = setup()
    opt = make_optimizer(cfg, model, 1e-3, capturable=True)   # ignored off CUDA
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["lr"] == 1e-3
    assert not opt.param_groups[0]["fused"] and not opt.param_groups[0]["capturable"]
    lr_on_device(opt, "cpu")
    lr = opt.param_groups[0]["lr"]
    assert torch.is_tensor(lr) and float(lr) == pytest.approx(1e-3)
    lr_on_device(opt, "cpu")
    assert opt.param_groups[0]["lr"] is lr              # kept: a capture reads its address
    # OneCycle over a tensor learning rate writes floats into it in place
    sched = make_scheduler(TrainConfig(**{**TINY, "scheduler": "onecycle", "epochs": 2}), opt, 5)
    sched.step()
    assert opt.param_groups[0]["lr"] is lr and 0 < float(lr) < 1e-3


@pytest.mark.parametrize("model_name", ["sasrec"])
def test_data_parallel_step_trains_like_ddp(tmp_path, model_name):
    """Two CPU processes (gloo): the multi-process step body (each process's share, the
    gradients averaged, clipping, optimiser) trains like the eager DDP loop, with either
    gradient averaging: the bucketed all-reduces launched from the gradient hooks during the
    backward give the flat all-reduce's weights to the bit (two processes: every element is
    a + b either way). A capture that fails on one process only leaves every process eager."""
    out = tmp_path / "twin.json"
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no",
         str(Path(__file__).parent / "helpers" / "ddp_step_twin.py"), model_name, str(out)],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(out.read_text())
    share = seen["n_windows"] // 2
    for e in seen["epochs"]:
        (la, na, sa), (lb, nb, sb) = e["loop"], e["flat"]
        assert e["mode"] == "eager" and e["steps"] == math.ceil(share / 30)
        assert sa == sb == 2 * share
        assert lb == pytest.approx(la, rel=1e-5) and nb == pytest.approx(na, rel=1e-5)
        assert e["overlap"] == e["flat"]            # loss, gradient norm sums: to the bit
        # The fallback's Adam holds its learning rate as a float32 tensor (as a graph needs
        # it): 0.001 becomes 0.0010000000475, so its updates round apart from the flat twin's
        # float 0.001 now and then. Equal to the bit on an Intel Xeon, not on an AMD EPYC.
        assert e["flat_fallback"] == pytest.approx(e["flat"], rel=1e-5)
    assert all(seen["ranks_identical"].values())    # every process holds the same weights
    assert seen["max_weight_diff"] < 2e-4
    assert seen["buckets"] > 2 and seen["overlap_equals_flat"]
    assert "overlapped all-reduce" in seen["describe"]["overlap"]
    assert "2 processes, flat all-reduce" in seen["describe"]["flat"]
    assert seen["fallback"] == [["eager", "capture failed on another process"],
                                ["eager", "capture failed: RuntimeError: injected"]]
    # the same training, eagerly; Adam with its learning rate as a tensor (as a graph needs it)
    # rounds differently, amplified where a gradient is ~0 (see the test above)
    assert seen["fallback_max_diff"] < 2e-4


@pytest.mark.parametrize("model_name", ["sasrec", "bert4rec"])
def test_target_capacity_holds_every_batch_of_the_run(model_name):
    """The fixed number of scored rows is at least the targets of every batch of every epoch
    (real batches, BERT4Rec's random masks included), and far below every position when the
    histories are short."""
    from recsys_core.train.batches import target_capacity, window_target_counts
    short = {"n_users": 200, "n_items": 50, "n_interactions": 1400, "seed": 4}
    cfg, acc, split, model, starts, ends = setup(model_name, synthetic=short, max_len=30,
                                                 batch_size=32, epochs=5)
    counts = window_target_counts(model.objective, starts, ends, cfg.max_len)
    capacity = target_capacity(counts, cfg.batch_size, cfg.seed, cfg.epochs, multiple=1)
    s, e = with_empty_window(starts, ends)
    most = 0
    for epoch in range(1, cfg.epochs + 1):
        for row in padded_epoch_batches(len(starts), cfg.batch_size, cfg.seed, epoch, "cpu"):
            most = max(most, int((training_batch(cfg, model, split, s[row], e[row])[1] != 0).sum()))
    assert most <= capacity < cfg.batch_size * cfg.max_len / 2
    if model.objective == "causal":      # the bound is exact where targets are not random
        assert capacity == most
    assert target_capacity(counts, cfg.batch_size, cfg.seed, cfg.epochs) % 64 == 0
    step = TrainStep(cfg, model, make_optimizer(cfg, model, cfg.lr), acc, split, starts, ends,
                     use_graph=False)
    assert step.capacity >= capacity and f"{step.capacity} of {cfg.batch_size * 30}" in step.describe()


def _epoch_losses(monkeypatch=None, **kw):
    cfg, acc, split, model, starts, ends = setup("sasrec", **kw)
    step = TrainStep(cfg, model, make_optimizer(cfg, model, cfg.lr), acc, split, starts, ends,
                     use_graph=False, record_losses=True)
    step.run_epoch(1)
    step.run_epoch(2)
    return step, torch.cat([p.detach().flatten() for p in model.parameters()])


def test_compiled_encoder_trains_as_the_module_does():
    """compile_encoder: the step's encoder as Inductor kernels (here its CPU backend) gives the
    losses and weights of the module's own encoder."""
    plain, w_plain = _epoch_losses()
    compiled, w_compiled = _epoch_losses(compile_encoder=True)
    assert "encoder compiled" in compiled.describe() and "compiled" not in plain.describe()
    torch.testing.assert_close(compiled.losses, plain.losses, rtol=1e-4, atol=1e-5)
    # Adam turns float rounding in near-zero gradients into whole steps of lr: weights are
    # compared as a whole
    assert float((w_compiled - w_plain).norm() / w_plain.norm()) < 1e-3


def test_an_encoder_that_fails_to_compile_is_dropped_with_the_reason(monkeypatch):
    def broken(fn, **_):
        def call(*a, **k):
            raise RuntimeError("inductor says no")
        return call
    monkeypatch.setattr(torch, "compile", broken)
    plain, w_plain = _epoch_losses()
    fallen, w_fallen = _epoch_losses(compile_encoder=True)
    assert "encoder not compiled (RuntimeError: inductor says no)" in fallen.describe()
    assert torch.equal(fallen.losses, plain.losses) and torch.equal(w_fallen, w_plain)


def test_tritons_cache_key_is_hashed_in_a_thread():
    """A GPU run starts Triton's once-per-process cache key (a hash of Triton's files,
    libtriton's 500 MB included) in a thread as it sets up (setup.build_run): the first kernel
    finds it computed instead of hashing on the cell's critical path."""
    pytest.importorskip("triton")
    from triton.runtime.cache import triton_key

    from recsys_core.kernel_device import hash_triton_in_background
    triton_key.cache_clear()
    thread = hash_triton_in_background()
    assert thread is not None and thread.name == "triton-key"
    thread.join(timeout=120)
    assert triton_key.cache_info().currsize == 1 and triton_key.cache_info().misses == 1


def test_the_fused_loss_gives_the_loss_and_gradients_of_torchs_cross_entropy(tmp_path):
    """fused_ce.py's kernel (the GPU step's loss) under Triton's interpreter: loss and the
    gradients of hidden states, the whole item table and an output bias as torch's
    cross-entropy gives them; rows of the table past n_valid (BERT4Rec's mask token) get
    none (tests/helpers/ce_twin.py)."""
    from tests.helpers.interpreter import interpreted
    results = interpreted("ce_twin", tmp_path=tmp_path)
    for r in results:
        tol = 1e-5 if r["dtype"] == "torch.float32" else 1e-2
        assert r["shapes"] and r["extra_rows_grad"] == 0.0, r
        assert r["loss"] < tol and r["grads"] < tol, r
