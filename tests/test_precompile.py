"""The Triton kernels a GPU run compiles in a thread while it sets up (train/precompile.py,
kernel_device.BackgroundCompile): compiled with the specialisation their real first calls
have, as Triton's own argument binder for an H100 (sm_90) computes it from both calls' arguments;
the thread's order, failures and waits. Whether the first calls then find their kernels on a
GPU: `python -m benchmarks.triton_cold` (results/benchmarks/triton_cold/)."""
import functools
import threading
import time

import pytest
import torch

from recsys_core import kernel_device, metrics, rank_counts
from recsys_core.data import LeaveOneOut, load_dataset
from recsys_core.models import MODEL_NAMES, build_model
from recsys_core.train import TrainConfig, fused_ce
from recsys_core.train.batches import training_batch
from recsys_core.train import evaluate
from recsys_core.train.evaluate import user_loader, user_ranks
from recsys_core.train.precompile import eval_scores_dtype, kernels_to_precompile
from recsys_core.train.setup import make_accelerator, seed_everything

TINY = dict(dataset="synthetic", synthetic={"n_users": 60, "n_items": 43,
                                            "n_interactions": 1500, "seed": 3},
            max_len=10, embedding_dim=16, num_heads=2, num_blocks=1, batch_size=16,
            wandb_mode="disabled", device="cpu", d_state=4)


class Recorder:
    """Stands for a Triton kernel: records its launches' and its warm-up's arguments."""

    def __init__(self):
        self.launches, self.warmups = [], []

    def __getitem__(self, grid):
        return lambda *args, **options: self.launches.append((args, options))

    def warmup(self, *args, grid, **options):
        from triton.runtime.jit import MockTensor
        self.warmups.append((tuple(map(MockTensor.wrap_dtype, args)), options))
        return type("Compiled", (), {"_init_handles": lambda self: None})()


def specialisation(kernel, call):
    """Triton's key for a launch of `kernel` with these arguments, for an H100."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature
    binder = create_function_from_signature(kernel.signature, kernel.params,
                                            make_backend(GPUTarget("cuda", 90, 32)))
    args, options = call
    return binder(*args, **options)[1:]


def cell(model_name, precision):
    cfg = TrainConfig(**{**TINY, "model": model_name, "mixed_precision": precision})
    acc = make_accelerator(cfg)
    data = load_dataset(cfg.dataset, synthetic=cfg.synthetic)
    split = LeaveOneOut.from_data(data, acc.device)
    seed_everything(cfg.seed)
    return cfg, acc, split, build_model(cfg.model, data.n_items, cfg, "cpu")


@pytest.mark.parametrize("model_name,precision", [("sasrec", "bf16"), ("bert4rec", "bf16"),
                                                  ("gru4rec", "no")])
def test_precompiled_kernels_have_the_specialisation_of_their_first_calls(model_name, precision,
                                                                          monkeypatch):
    """The training step's fused loss (as TrainStep._fused_loss calls it) and the evaluation's
    rank counts (user_ranks, through metrics.ranks) against what precompile compiled: the same
    Triton key, so the first real call finds the compiled kernel."""
    pytest.importorskip("triton")
    cfg, acc, split, model = cell(model_name, precision)
    jobs = kernels_to_precompile(cfg, model, split, acc.mixed_precision, fixed_step=True)
    assert sorted(jobs) == ["fused_ce", "rank_counts"]
    kernels = {"fused_ce": fused_ce._ce_kernel(), "rank_counts": rank_counts._kernel()}
    recorders = {name: Recorder() for name in kernels}
    monkeypatch.setattr(fused_ce, "_KERNEL", recorders["fused_ce"])
    monkeypatch.setattr(rank_counts, "_kernel", lambda: recorders["rank_counts"])
    monkeypatch.setattr(rank_counts, "kernels_run_on", lambda device_type: True)
    for job in jobs.values():
        job()

    starts, ends = split.train_windows(cfg.max_len, cfg.train_windows)
    inputs, targets, _ = training_batch(cfg, model, split, starts[:cfg.batch_size],
                                        ends[:cfg.batch_size])
    with acc.autocast():
        hidden = model.encode(inputs)[targets != 0]
    fused_ce.linear_cross_entropy(hidden, model.item_emb.weight, getattr(model, "head_bias", None),
                                  targets[targets != 0], model.n_items + 1,
                                  fused_ce.logits_dtype(acc.mixed_precision))
    # the GPU's evaluation: no host read, so the kernel counts
    monkeypatch.setattr(evaluate, "ranks", functools.partial(metrics.ranks, host_read=False))
    user_ranks(model, split, "val", max_len=cfg.max_len, filter_seen=True,
               loader=user_loader(split.n_users, 32, acc), accelerator=acc,
               n_valid=split.n_items + 1)
    for name, kernel in kernels.items():
        rec = recorders[name]
        assert rec.launches and len(rec.warmups) == 1, name
        first = specialisation(kernel, rec.launches[0])
        assert specialisation(kernel, rec.warmups[0]) == first, name
        assert all(specialisation(kernel, c) == first for c in rec.launches), name


@pytest.mark.parametrize("model_name", [m for m in MODEL_NAMES if m != "pop"])
def test_the_scores_dtype_rule_holds_for_every_model(model_name):
    """eval_scores_dtype is the dtype of the model's score_next under autocast, or None."""
    cfg, acc, split, model = cell(model_name, "bf16")
    model.eval()
    with torch.no_grad(), acc.autocast():
        scores = model.score_next(split.inputs("val", cfg.max_len)[:4])
    rule = eval_scores_dtype(model, "bf16")
    assert rule in (None, scores.dtype)
    if model_name in ("sasrec", "bert4rec", "gru4rec", "xlstm"):
        assert rule == scores.dtype


def test_no_fused_loss_kernel_where_the_step_computes_the_models_loss():
    cfg, acc, split, model = cell("sasrec", "bf16")
    assert list(kernels_to_precompile(cfg, model, split, "bf16", fixed_step=False)) == \
        ["rank_counts"]
    sampled = cfg.model_copy(update={"loss": "sampled"})
    assert list(kernels_to_precompile(sampled, model, split, "bf16", fixed_step=True)) == \
        ["rank_counts"]


def test_the_background_compile_runs_its_jobs_in_order_records_failures_and_is_waited_for(
        monkeypatch):
    monkeypatch.setattr(torch.cuda, "device", lambda index: _Noting(index, seen))
    seen, release = [], threading.Event()
    key = threading.Thread(target=lambda: (time.sleep(0.05), seen.append("key")))
    key.start()

    def fails():
        raise RuntimeError("no ptxas")

    jobs = {"first": lambda: seen.append(("first", threading.current_thread().name)),
            "broken": fails,
            "slow": lambda: (release.wait(10), seen.append("slow"))}
    compiling = kernel_device.compile_in_background(jobs, torch.device("cuda", 3), after=key)
    time.sleep(0.1)
    assert compiling.summary["compile_s"] is None and "slow" not in seen
    threading.Timer(0.2, release.set).start()
    kernel_device.wait_for_compiles()
    assert seen == ["key", ("device", 3), ("first", "triton-compile"), "slow"]
    assert compiling.summary["failed"] == {"broken": "RuntimeError: no ptxas"}
    assert compiling.summary["compile_s"] >= 0.1 and compiling.summary["waited_s"] >= 0.1
    assert compiling.summary["kernels"] == ["first", "broken", "slow"]
    kernel_device.wait_for_compiles()       # done: returns at once, adds nothing
    assert compiling.summary["waited_s"] < 1


def test_a_kernels_first_call_waits_for_its_own_job_and_no_module_loads_during_a_capture(
        monkeypatch):
    """The training step's kernels need not wait for the evaluation's compile; a load that is
    ready while a graph is captured waits for the capture's end, and a wait on the capturing
    thread returns at once (its kernels were called, so compiled, before the capture)."""
    monkeypatch.setattr(torch.cuda, "device", lambda index: _Noting(index, []))
    events, release = [], threading.Event()
    loaded = type("Compiled", (), {"_init_handles": lambda self: events.append("loaded")})()
    jobs = {"step": lambda: events.append("step compiled"),
            "eval": lambda: (release.wait(10), kernel_device.load_on_device(loaded))}
    compiling = kernel_device.compile_in_background(jobs, torch.device("cuda", 0))
    kernel_device.wait_for_compiles("step")
    assert events == ["step compiled"] and compiling._thread.is_alive()
    with kernel_device.capturing():
        release.set()
        time.sleep(0.2)                      # the eval job is ready to load: it must wait
        assert events == ["step compiled"]
        t0 = time.perf_counter()
        kernel_device.wait_for_compiles("eval")       # on the capturing thread: no wait
        kernel_device.wait_for_compiles()
        assert time.perf_counter() - t0 < 0.05 and compiling._thread.is_alive()
    kernel_device.wait_for_compiles("eval")
    assert events == ["step compiled", "loaded"] and compiling.summary["failed"] is None
    kernel_device.wait_for_compiles("not a job")     # a job it never had: the thread's end


def test_a_compile_thread_that_cannot_enter_its_device_is_recorded_and_never_waited_on(
        monkeypatch):
    def no_device(index):
        raise RuntimeError("CUDA error: no device")
    monkeypatch.setattr(torch.cuda, "device", no_device)
    compiling = kernel_device.compile_in_background({"step": lambda: None},
                                                    torch.device("cuda", 0))
    waiter = threading.Thread(target=kernel_device.wait_for_compiles, args=("step",),
                              daemon=True)
    waiter.start()
    waiter.join(5)
    assert not waiter.is_alive()                     # the step's first call goes on
    assert compiling.summary["failed"] == {"device": "RuntimeError: CUDA error: no device"}


class _Noting:
    def __init__(self, index, seen):
        self.index, self.seen = index, seen

    def __enter__(self):
        self.seen.append(("device", self.index))

    def __exit__(self, *exc):
        return False
