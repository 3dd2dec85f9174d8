"""The training step as one CUDA graph, on one GPU or on each GPU of a data-parallel run.

At the study's sizes (batch 128, a few hundred thousand parameters) a training step is a few
hundred small kernels, and launching them from Python costs more than running them. Captured
once in a CUDA graph, a whole step (batch building, forward, backward, gradient clipping, the
optimiser's update and the loss sums) is replayed with one launch.

What makes that possible:
- a fixed batch shape: the epoch is one [steps, batch] index matrix (`padded_epoch_batches`,
  the same permutation and batches as the eager loop), the last partial batch padded with an
  empty window whose targets are 0, i.e. ignored by the loss (a sum / count) and its gradient;
- static buffers: the index matrix and a step counter live on the device; the graph reads its
  batch row at the counter and advances it, so a replay needs no copy and no argument;
- a capturable optimiser (fused Adam/AdamW, step count and learning rate on the device:
  `optim.make_optimizer(capturable=True)`; schedules write the learning rate in place);
- gradient clipping without a host sync (`clip_grad_norm_` scales by a clamped device factor);
- RNG in the graph (dropout, BERT4Rec's masks, sampled negatives): PyTorch advances the
  generator's offset on every replay, so every step draws fresh numbers;
- warm-up on a side stream before capture (Triton autotuning, cuBLAS/cuDNN handles, the
  optimiser's state), after which weights, optimiser state and the CUDA generator are
  restored, so the graph trains from exactly the state the eager loop would have.

Half of what is left under the graph (ML-1M shape: results/benchmarks/gpu_notes.md) was the
full-catalogue loss, so where the output layer is the standard one (item embeddings, plus
BERT4Rec's bias) the step computes it as `linear_cross_entropy` (fused_ce.py: one Triton kernel
per row, logits' log-sum-exp, loss and gradient in one pass; item table padded to a multiple
of 8 rows), checked first against the model's own loss and gradients on the first batch
(dropout off) and left out if they disagree (`loss_path`, `fused_check`).

Several processes (one GPU each): every process runs the module itself (no DDP wrapper:
setup.build_run) on its equal share of the epoch's permutation (the eager DDP loop's batches:
tests/helpers/ddp_step_twin.py) and averages the gradients before clipping and the optimiser,
`grad_sync: flat` (one all-reduce after the backward) or `overlap` (bucketed all-reduces during
it; grad_sync.py). It runs eagerly unless `multi_gpu_graph: true`: then the step with its NCCL
all-reduces is captured as on one GPU, after PyTorch's recipe for collectives in a graph (the
process group's settings: graph_capture.NCCL_GRAPH_ENV; 11 warm-up steps on the side stream
the capture then uses; capture mode thread-local, so that the NCCL watchdog's event queries
from its own thread cannot invalidate it). Every process keeps its graph only if all captured
one; else all run the step eagerly, with the reason (results/benchmarks/scaling/scaling.md).

With `compile_encoder: true` the model's encoder inside that step is torch.compile'd (Inductor
fuses the blocks' LayerNorms, dropout, residuals and masks into a few larger kernels): about
half the ML-1M-shape epoch on an H200, for a compile of 12-76 s at the first step on empty
caches, 3-5 s on a sweep's warm ones (results/benchmarks/gpu_epoch.md, compile_reuse/). The
graph then replays the compiled kernels; a compile or capture that fails drops the compiled
encoder and says why (`compile_note`).

`TrainStep` also runs the same fixed-shape body eagerly (`use_graph=False`): on the CPU, for
tests, and as the reference the GPU benchmark compares the graph against
(benchmarks/graph_check.py, `python -m benchmarks.gpu_epoch`). Where no graph can run (CPU,
`cuda_graphs: false`, fault injection) `step_choice.build_train_step` returns None and
`loop.train_epoch` runs its eager loop; a capture that fails leaves its reason in
`fallback_reason` and the step body runs eagerly (same training, no graph).
"""
from __future__ import annotations

import time

import torch

from recsys_core.kernel_device import capturing
from recsys_core.models.base import scored_positions
from recsys_core.train.batches import (padded_epoch_batches, target_capacity, training_batch,
                                     window_target_counts, with_empty_window)
from recsys_core.train.cast_once import CastOnce
from recsys_core.train.fused_ce import (dropout_off, fused_loss_reason, linear_cross_entropy,
                                       logits_dtype)
from recsys_core.train.grad_sync import broadcast_parameters, make_grad_sync
from recsys_core.train.graph_capture import capture_state, reset_rng_capture_state, restore_state
from recsys_core.train.optim import lr_on_device
from recsys_core.train.step_profile import StepProfile

WARMUP_STEPS = 3
WARMUP_STEPS_NCCL = 11     # PyTorch's recipe for DDP (its reducer settles in the first steps)


def torch_optimizer(optimizer):
    """The torch optimiser under Accelerate's wrapper (whose step() adds host logic only)."""
    return getattr(optimizer, "optimizer", optimizer)


class TrainStep:
    """A fixed-shape training step over this run's training windows, replayed from a CUDA
    graph (`use_graph=True`) or run eagerly. `run_epoch` returns what `loop.train_epoch`
    returns: (mean loss, mean gradient norm, sequences)."""

    def __init__(self, cfg, model, optimizer, accelerator, split, starts, ends,
                 use_graph: bool = True, record_losses: bool = False, fused_loss: bool = True):
        self.cfg, self.model, self.optimizer, self.accelerator = cfg, model, optimizer, accelerator
        self.unwrapped = accelerator.unwrap_model(model)
        self.split = split
        self.device = accelerator.device
        self.n = len(starts)
        self.starts, self.ends = with_empty_window(starts, ends)     # window n is empty
        self.rank, self.world = accelerator.process_index, accelerator.num_processes
        self.share = self.n // self.world if self.world > 1 else self.n
        self.steps = max(-(-self.share // cfg.batch_size), 1)
        # rows of the output layer per step: the most targets any batch of the run holds
        self.capacity = target_capacity(
            window_target_counts(self.unwrapped.objective, starts, ends, cfg.max_len),
            cfg.batch_size, cfg.seed, cfg.epochs, self.rank, self.world)
        self.positions = cfg.batch_size * cfg.max_len
        dev = self.device
        self.rows = torch.full((self.steps, cfg.batch_size), self.n, dtype=torch.long, device=dev)
        self.counter = torch.zeros((), dtype=torch.long, device=dev)
        self.loss_sum = torch.zeros((), device=dev)
        self.norm_sum = torch.zeros((), device=dev)
        self.losses = torch.zeros(self.steps, device=dev) if record_losses else None
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.sync = make_grad_sync(cfg, self.params, self.world) if self.world > 1 else None
        if self.world > 1:
            broadcast_parameters(self.params)
        self.use_graph = use_graph
        self.graph: torch.cuda.CUDAGraph | None = None
        self.fallback_reason: str | None = None
        self.capture_time_s: float | None = None
        self.fused_check: dict | None = None
        if use_graph:
            lr_on_device(torch_optimizer(optimizer), dev)
        # the loss: "model" (the model's forward) or "fused" (linear_cross_entropy)
        why = fused_loss_reason(cfg, self.unwrapped, dev.type, fused_loss)
        self.fused = why is None
        self.compute_dtype = logits_dtype(accelerator.mixed_precision)
        self.loss_path = "fused" if self.fused else f"model ({why})"
        # The encoder as Inductor kernels (LayerNorm, dropout, residual and mask fused: fewer,
        # larger kernels) or as the module's own ops. It compiles at its first call (the first
        # warm-up step before a capture); one that fails there or in the capture is dropped,
        # with the reason in `compile_note`, and the step goes on with the module's encoder.
        # Otherwise, under bf16 autocast and where the model allows it, the module's encoder with
        # its linear layers' weights cast once a step, in one kernel, and their gradients back in
        # one (cast_once.py): at the Beauty cell's shape 40 fewer copy kernels a step. Not with
        # the overlapped gradient all-reduce, whose buckets would then all wait for that last
        # cast at the end of the backward.
        self.casts_once = (self.compute_dtype != torch.float32 and
                           self.unwrapped.cast_weights_once and
                           (self.world == 1 or cfg.grad_sync != "overlap"))
        self.module_encode = CastOnce(self.unwrapped) if self.casts_once else self.unwrapped.encode
        self.encode = self.module_encode
        self.compile_note: str | None = None
        if getattr(cfg, "compile_encoder", False):
            self.unwrapped.leave_out_of_compile()
            self.encode = torch.compile(self.unwrapped.encode, dynamic=False)
            self.compile_note = "encoder compiled"
        self._compiled_ran = False

    # -- the step ---------------------------------------------------------------------------
    def _body(self) -> None:
        """One step on the static buffers: batch row `counter` → loss → update. No host sync;
        every tensor it writes outside itself is updated in place."""
        cfg = self.cfg
        row = self.rows.index_select(0, self.counter.view(1)).view(-1)
        inputs, targets, negatives = training_batch(cfg, self.unwrapped, self.split,
                                                    self.starts[row], self.ends[row])
        if self.fused:
            loss = self._fused_loss(inputs, targets)
        else:   # the model's forward, as Accelerate runs it (autocast), with the step's encoder
            with self.accelerator.autocast():
                loss = self.unwrapped.loss(self.encode(inputs), targets, negatives, self.capacity)
        if self.sync is not None:
            self.sync.begin()
        self.accelerator.backward(loss)
        if self.sync is not None:
            self.sync.finish()
        if cfg.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip, foreach=True)
            self.norm_sum.add_(norm.detach().float())
        torch_optimizer(self.optimizer).step()
        loss = loss.detach().float()
        self.loss_sum.add_(loss)
        if self.losses is not None:
            self.losses.index_copy_(0, self.counter.view(1), loss.view(1))
        self.counter.add_(1)

    def _all_agree(self, ok: bool) -> bool:
        """True on every process when `ok` is true on every process (one eager all-reduce):
        every process must run the same step body, e.g. the same loss path."""
        if self.world == 1:
            return ok
        flag = torch.tensor([1 if ok else 0], device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        return bool(flag.item())

    def _fused_loss(self, inputs, targets, encode=None) -> torch.Tensor:
        """The model's forward loss (full-softmax CE, mean over targets) through the fused
        kernel, over the item table's first n_items + 1 rows."""
        m = self.unwrapped
        encode = encode or self.encode
        with self.accelerator.autocast():
            hidden, targets = scored_positions(encode(inputs), targets, self.capacity)
        bias = getattr(m, "head_bias", None) if type(m).logits is not _base_logits() else None
        return linear_cross_entropy(hidden, m.item_emb.weight, bias, targets, m.n_items + 1,
                                    self.compute_dtype)

    @torch.no_grad()
    def _grads(self):
        return torch.cat([p.grad.float().flatten() if p.grad is not None else
                          torch.zeros(p.numel(), device=p.device) for p in self.params])

    def validate_fused_loss(self) -> None:
        """The fused loss against the model's own on the first batch (no dropout, one mask
        draw for both): loss and gradients within bf16 tolerance, else the model's loss."""
        if not self.fused:
            return
        saved = dropout_off(self.unwrapped)    # train mode (cuDNN RNNs only backprop there)
        rng = torch.cuda.get_rng_state(self.device)   # BERT4Rec's masks, negatives: see capture
        try:
            row = self.rows[0]
            inputs, targets, _ = training_batch(self.cfg, self.unwrapped, self.split,
                                                self.starts[row], self.ends[row])
            out = []
            for fused in (False, True):
                torch_optimizer(self.optimizer).zero_grad(set_to_none=True)
                loss = self._fused_loss(inputs, targets, self.unwrapped.encode) if fused else \
                    self.unwrapped(inputs, targets, None)
                loss.backward()
                out.append((float(loss.detach()), self._grads()))
            (l0, g0), (l1, g1) = out
            loss_diff = abs(l1 - l0) / max(abs(l0), 1e-12)
            grad_diff = float((g1 - g0).norm() / g0.norm().clamp(min=1e-30))
            self.fused_check = dict(loss_rel_diff=loss_diff, grad_rel_diff=grad_diff)
            if not (loss_diff < 1e-2 and grad_diff < 5e-2):
                raise ValueError(f"fused loss disagrees: loss rel diff {loss_diff:.2e}, "
                                 f"gradient rel diff {grad_diff:.2e}")
        except Exception as e:  # noqa: BLE001 -- the model's own loss, with the reason
            self.fused = False
            self.loss_path = f"model (fused loss failed: {type(e).__name__}: {str(e)[:200]})"
        finally:
            torch_optimizer(self.optimizer).zero_grad(set_to_none=True)
            for mod, name, value in saved:
                setattr(mod, name, value)
            torch.cuda.set_rng_state(rng, self.device)
        if not self._all_agree(self.fused) and self.fused:
            self.fused = False
            self.loss_path = "model (the fused loss failed its check on another process)"

    def _eager_step(self) -> None:
        torch_optimizer(self.optimizer).zero_grad(set_to_none=True)
        if self._compiled_ran or self.encode is self.module_encode:
            self._body()
            return
        try:
            self._body()             # the first call compiles: forward and backward
            self._compiled_ran = True
        except Exception as e:  # noqa: BLE001 -- raised before the optimiser step: run again
            self._drop_compiled(f"{type(e).__name__}: {str(e)[:200]}")
            torch_optimizer(self.optimizer).zero_grad(set_to_none=True)
            self._body()

    def _drop_compiled(self, why: str) -> None:
        self.encode = self.module_encode
        self.compile_note = f"encoder not compiled ({why})"[:300]

    # -- capture ----------------------------------------------------------------------------
    def _reset_epoch(self, rows: torch.Tensor) -> None:
        self.rows.copy_(rows)
        self.counter.zero_()
        self.loss_sum.zero_()
        self.norm_sum.zero_()

    def capture(self) -> None:
        """Warm up on a side stream, capture one step, restore weights and optimiser state.
        The batch rows must be set (`_reset_epoch`) before; they are reset here again. A
        compiled encoder that fails there is dropped (with the reason) and the capture tried
        again with the module's own. With several processes each step is collective: every
        process retries, and keeps its graph, only as all do."""
        t0 = time.perf_counter()
        self.validate_fused_loss()
        self._capture_once()
        if not self._all_agree(self.graph is not None) and \
                self.encode is not self.module_encode:
            self._drop_compiled(self.fallback_reason or "capture failed on another process")
            self.graph, self.fallback_reason = None, None
            self._capture_once()
        if not self._all_agree(self.graph is not None) and self.graph is not None:
            self.graph = None
            self.fallback_reason = "capture failed on another process"
        self.capture_time_s = time.perf_counter() - t0

    def _capture_once(self) -> None:
        snapshot = capture_state(self.params, torch_optimizer(self.optimizer))
        # The warm-up's dropout, masks and negatives draw from the CUDA generator: put it back
        # too, or a run resumed from a checkpoint (which captures again) continues the random
        # stream shifted by a warm-up (on an H200 a resumed Mamba4Rec cell missed the
        # uninterrupted run's result, whose two fresh runs agreed to the last digit).
        rng = torch.cuda.get_rng_state(self.device)
        rows = self.rows.clone()
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        nccl = self.world > 1      # the warm-up's stream is the capture's; see the module's text
        try:
            with torch.cuda.stream(stream):
                for _ in range(WARMUP_STEPS_NCCL if nccl else WARMUP_STEPS):
                    self._eager_step()
            torch.cuda.current_stream(self.device).wait_stream(stream)
            torch.cuda.synchronize(self.device)
            torch_optimizer(self.optimizer).zero_grad(set_to_none=True)
            self._reset_epoch(rows)
            graph = torch.cuda.CUDAGraph()
            with capturing(), torch.cuda.graph(   # no kernel loaded from a thread mid-capture
                    graph, stream=stream if nccl else None,
                    capture_error_mode="thread_local" if nccl else "global"):
                self._body()
            torch.cuda.synchronize(self.device)
            self.graph = graph
        except Exception as e:   # noqa: BLE001 -- any capture failure: eager, with the reason
            self.graph = None
            self.fallback_reason = f"capture failed: {type(e).__name__}: {str(e)[:300]}"
            torch.cuda.synchronize(self.device)
            torch_optimizer(self.optimizer).zero_grad(set_to_none=True)
            reset_rng_capture_state(self.device)
        finally:
            restore_state(self.params, torch_optimizer(self.optimizer), snapshot)
            self._reset_epoch(rows)
            torch.cuda.synchronize(self.device)
            torch.cuda.set_rng_state(rng, self.device)

    # -- an epoch ---------------------------------------------------------------------------
    def run_epoch(self, epoch: int, schedule=None,
                  profile: StepProfile | None = None) -> tuple[float, float, int]:
        cfg = self.cfg
        self.model.train()
        self._reset_epoch(padded_epoch_batches(self.n, cfg.batch_size, cfg.seed, epoch,
                                               self.device, pad_index=self.n,
                                               rank=self.rank, world=self.world))
        if self.use_graph and self.graph is None and self.fallback_reason is None:
            self.capture()
        per_batch = schedule is not None and schedule.per_batch
        step = self.graph.replay if self.graph is not None else self._eager_step
        for i in range(self.steps):
            if profile is not None:
                profile.at(i, self.steps, self.describe)
            step()
            if per_batch:
                schedule.after_batch()
        if profile is not None:
            profile.at(self.steps, self.steps, self.describe)
        stats = torch.stack([self.loss_sum, self.norm_sum])
        if self.world > 1:
            stats = self.accelerator.reduce(stats, reduction="mean")
        stats = stats.cpu()                                         # the epoch's one sync
        return float(stats[0]) / self.steps, float(stats[1]) / self.steps, self.share * self.world

    @property
    def mode(self) -> str:
        return "graph" if self.graph is not None else "eager"

    def describe(self) -> str:
        """What ran, for the result's `train_step`: graph or eager, which loss, how many of
        the batch's positions reach the output layer, and why the graph fell back."""
        rows = min(self.capacity, self.positions)
        text = f"{self.mode}, loss {self.loss_path}, {rows} of {self.positions} positions scored"
        if self.sync is not None:
            text += f", {self.world} processes, {self.sync.describe()}"
        if self.compile_note:
            text += f", {self.compile_note}"
        if self.casts_once and self.encode is self.module_encode:
            text += ", linear weights cast once a step"
        return (text + (f" ({self.fallback_reason})" if self.fallback_reason else ""))[:500]


def _base_logits():
    from recsys_core.models.base import SequentialModel
    return SequentialModel.logits
