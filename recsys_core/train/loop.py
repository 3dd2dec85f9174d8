"""One cell, top to bottom: data → model → epochs (train, validate, early stop, checkpoint) →
test of the best checkpoint → result files. Runs the same on CPU, one GPU or several through
Accelerate; only the main process writes files and logs.
"""
from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from recsys_core.telemetry import GpuTelemetry
from recsys_core.tracking import Tracker
from recsys_core.train import checkpoint as ckpt
from recsys_core.train.batches import epoch_batches, training_batch
from recsys_core.train.cold_start import cold_start_metrics
from recsys_core.train.config import TrainConfig
from recsys_core.train.evaluate import predictions
from recsys_core.train.hooks import DebugHooks
from recsys_core.train.optim import current_lr
from recsys_core.train.prepared import Prepared
from recsys_core.train.provenance import provenance
from recsys_core.train.recorded import geometry_figures, longtail_figures
from recsys_core.train.results import write_history, write_predictions, write_result
from recsys_core.train.setup import Run, build_run, check_out_is_this_runs, make_accelerator
from recsys_core.train.stop import stop_requested


class NonFiniteLoss(RuntimeError):
    pass


def progress_line(epoch: int, cap: int, loss: float, monitor: str, value: float,
                  state: ckpt.TrainState, seconds: float) -> str:
    return (f"epoch {epoch:>{len(str(cap))}}/{cap}  loss {loss:.4f}  {monitor} {value:.4f}  "
            f"best {state.best_metric:.4f} @{state.best_epoch}  {seconds:.1f}s")


def run(cfg: TrainConfig, progress=None, hooks: DebugHooks = DebugHooks(), *,
        prepared: Prepared | None = None, job: dict | None = None) -> dict:
    """Train and evaluate one cell; always leaves result files, FAILED with a reason if it
    failed. Returns the result record (raises after recording if the run crashed).
    `progress` (e.g. print) gets one line per epoch from the main process. `prepared`: data
    kept across the runs of this process (a worker's); `job`: what the job that runs this
    cell knows of it, recorded as it is (its time before this call, how it runs the cell)."""
    t0 = time.time()
    out = Path(cfg.out)
    accelerator = make_accelerator(cfg)
    if accelerator.num_processes != cfg.num_processes:
        # e.g. `accelerate launch --cpu --num_processes 2` silently runs one process
        raise RuntimeError(
            f"configured for num_processes={cfg.num_processes} but running in "
            f"{accelerator.num_processes}; launch through `python -m jobs.train_cell` or "
            "`accelerate launch --multi_gpu --num_processes N` (README)")
    main = accelerator.is_main_process
    check_out_is_this_runs(cfg)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    record = provenance(cfg, accelerator)
    record.update(job or {})
    say = progress if (progress is not None and main) else (lambda line: None)
    history: list[dict] = []
    tracker = None
    writer = ckpt.Writer(cfg.checkpoint_every_s)
    try:
        r = build_run(cfg, hooks, accelerator=accelerator, resume_dir=out, prepared=prepared)
        record.update(r.info, data_mirror=data_mirror_used(cfg))
        state = r.state
        history = state.history
        tracker = Tracker(cfg, out, enabled=main, run_id=record["run_id"],
                          start_epoch=state.epoch + 1, config=record_config(record))
        telemetry = GpuTelemetry(accelerator.device)
        monitor = cfg.monitored

        # where the wall time goes (setup, epochs, per-epoch saving, final test and files)
        times = {"time_setup_s": time.time() - t0, "time_epochs_s": 0.0, "time_saving_s": 0.0}
        while r.trainable and not state.stopped and state.epoch < cfg.epochs:
            epoch = state.epoch + 1
            t_epoch = time.time()
            loss, grad_norm, n_seq = train_epoch(r, epoch)
            if r.train_step is not None:   # what ran: graph or eager (capture failed), which loss
                record["train_step"] = r.train_step.describe()
                record["time_capture_s"] = r.train_step.capture_time_s
            train_time = time.time() - t_epoch
            if not math.isfinite(loss):
                raise NonFiniteLoss(f"non-finite training loss ({loss}) in epoch {epoch}")
            t_eval = time.time()
            val = r.evaluate("val")
            eval_time = time.time() - t_eval
            r.schedule.after_epoch(val[monitor])
            state.observe(epoch, val[monitor], cfg.patience)
            if not state.stopped and epoch < cfg.epochs:   # asked from outside (a tuner's pruner)
                state.stop_request = stop_requested(out, accelerator)
                state.stopped = state.stop_request is not None
            row = {"epoch": epoch, "train_loss": loss, "grad_norm": grad_norm,
                   "lr": current_lr(r.optimizer), "epoch_time_s": time.time() - t_epoch,
                   "train_time_s": train_time, "eval_time_s": eval_time,
                   "train_sequences_per_s": n_seq / max(train_time, 1e-9),
                   **val, **telemetry.read()}
            history.append(row)
            state.history = history
            say(progress_line(epoch, cfg.epochs, loss, monitor, val[monitor], state,
                              time.time() - t_epoch))
            t_save = time.time()
            times["time_epochs_s"] += t_save - t_epoch
            if main:   # checkpoint files written in the background, at most every
                # checkpoint_every_s (ckpt.Writer); the epoch's snapshot is kept until then
                if state.best_epoch == epoch:
                    writer.save_best(out, r.unwrapped)
                writer.save(out, cfg, accelerator, r.model, r.optimizer, r.schedule, state)
                write_history(out, history)
                tracker.log(row, step=epoch)
            accelerator.wait_for_everyone()
            times["time_saving_s"] += time.time() - t_save
            if hooks.epoch_sleep_s:
                time.sleep(hooks.epoch_sleep_s)

        t_final = time.time()
        writer.flush()
        writer.wait()
        # Only the main process writes best_model.pt (in the background): every process reads
        # it only once that write has finished.
        accelerator.wait_for_everyone()
        if r.trainable and state.best_epoch:
            ckpt.load_best(out, r.unwrapped, accelerator.device)
        record.update(r.evaluate("val"))
        record.update(r.evaluate("test"))
        record.update(cold_start_metrics(
            r.model, r.data, r.split, max_len=cfg.max_len, filter_seen=cfg.filter_seen,
            ks=cfg.ks, batch_size=cfg.eval_batch_size, accelerator=accelerator))
        if main:   # the process that writes the result; no collective inside: none waits for it
            record.update(longtail_figures(r))
            record.update(geometry_figures(r))
        record.update(status="COMPLETED", reason=None, best_epoch=state.best_epoch or None,
                      epochs_run=state.epoch, stopped_early=state.stopped,
                      stop_request=state.stop_request,
                      cuda_graphs=r.train_step is not None and r.train_step.mode == "graph")
        summarize_history(record, history)
        if main:
            write_history(out, history)
            write_predictions(out, predictions(r.unwrapped, r.split, r.data, cfg))
            tracker.finish(record)
            record.update(tracking_error=tracker.error, tracking_mode=tracker.mode)
        t_end = time.time()     # one reading: the parts never add up to more than the wall
        record.update(times, wall_time_s=t_end - t0, time_final_s=t_end - t_final)
        if main:
            write_result(out, record)
        return record
    except KeyboardInterrupt:
        # Ctrl-C, `timeout -s INT`, a local launcher stopping its cells (SIGINT, then SIGTERM):
        # the last finished epoch is written before the process ends (SIGTERM held off while
        # it is: the launcher's SIGKILL still ends a write that hangs). No result: resume runs
        # the cell again from there.
        with sigterm_held_off():
            writer.flush()
            writer.wait()
        raise
    except Exception as e:
        if isinstance(e, ckpt.OtherRunsFolder):   # out is another run's: leave it as it is
            raise
        try:   # the last finished epoch's checkpoint on disk: what a resume reads
            writer.flush()
            writer.wait()
        except Exception:  # noqa: BLE001 -- the first error is the one to report
            pass
        record.update(status="FAILED", reason=f"{type(e).__name__}: {e}",
                      traceback=traceback.format_exc()[-4000:], epochs_run=len(history),
                      wall_time_s=time.time() - t0)
        summarize_history(record, history)
        if main:
            write_history(out, history)
            if tracker is not None:
                tracker.finish(record, exit_code=1)
                record.update(tracking_error=tracker.error, tracking_mode=tracker.mode)
            write_result(out, record)
        if isinstance(e, NonFiniteLoss):
            return record
        raise


@contextlib.contextmanager
def sigterm_held_off():
    """SIGTERM ignored within (main thread only; a signal that came meanwhile is dropped)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def data_mirror_used(cfg: TrainConfig) -> str | None:
    """The mirror directory the dataset's files are read from (the option, else
    $RECSYS_DATA_MIRROR); None for generated data or where no mirror is set."""
    from recsys_core.data.fetch import mirror_root
    from recsys_core.data.names import SYNTHETIC
    root = None if cfg.dataset in SYNTHETIC else mirror_root(cfg.data_mirror)
    return str(root.resolve()) if root is not None else None


def train_epoch(r: Run, epoch: int) -> tuple[float, float, int]:
    """One pass over this process's share of the training windows: (mean loss, mean gradient
    norm, sequences). The loss and gradient norm are summed on the device and read once at
    the end: no host sync inside the step loop. With the run's fixed-shape step
    (train_step.TrainStep) the same epoch runs as CUDA-graph replays."""
    if r.train_step is not None:
        return r.train_step.run_epoch(epoch, r.schedule, r.profile)
    cfg, accelerator, model = r.cfg, r.accelerator, r.model
    model.train()
    loss_sum = torch.zeros((), device=accelerator.device)
    norm_sum = torch.zeros((), device=accelerator.device)
    steps, n_seq = 0, 0
    fault = r.hooks.fault(epoch, resumed=bool(r.info.get("resumed_from_epoch")))
    total = math.ceil(len(r.starts) // accelerator.num_processes / cfg.batch_size)
    for idx in epoch_batches(len(r.starts), cfg.batch_size, cfg.seed, epoch,
                             accelerator.process_index, accelerator.num_processes,
                             accelerator.device):
        if r.profile is not None:
            r.profile.at(steps, total, lambda: "eager loop")
        inputs, targets, negatives = training_batch(cfg, r.unwrapped, r.split, r.starts[idx],
                                                    r.ends[idx])
        loss = model(inputs, targets, negatives)
        if fault == "raise":
            raise RuntimeError(f"injected failure in epoch {epoch} "
                               f"(inject_fault={r.hooks.inject_fault})")
        if fault == "oom":
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 2.00 GiB "
                                         f"(injected in epoch {epoch}: "
                                         f"inject_fault={r.hooks.inject_fault})")
        if fault == "nan":
            loss = loss * float("nan")
        r.optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        if cfg.grad_clip > 0:
            norm_sum += accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip).detach()
        r.optimizer.step()
        r.schedule.after_batch()
        loss_sum += loss.detach()
        steps += 1
        n_seq += len(idx)
    if r.profile is not None:
        r.profile.at(steps, total, lambda: "eager loop")
    stats = accelerator.reduce(torch.stack([loss_sum, norm_sum]), reduction="mean")
    steps = max(steps, 1)
    return float(stats[0]) / steps, float(stats[1]) / steps, n_seq * accelerator.num_processes


def summarize_history(record: dict, history: list[dict]) -> None:
    if not history:
        record.setdefault("epoch_time_s", None)
        return
    seconds = [h["epoch_time_s"] for h in history]
    record["epoch_time_s"] = float(np.mean(seconds))
    # The mean carries the first epoch's one-off compiles and capture (xLSTM on an empty kernel
    # cache: 19.6 s against 0.25 s an epoch after it); the median is the steady epoch, and the
    # time to the best epoch is what those epochs took, not best epoch x mean.
    record["epoch_time_median_s"] = float(np.median(seconds))
    best = record.get("best_epoch")
    record["time_to_best_s"] = float(sum(h["epoch_time_s"] for h in history
                                         if h["epoch"] <= best)) if best else None
    # The validation curve travels in the result itself: aggregating a sweep's curves then
    # needs no history file per cell.
    record["val_recall@10_by_epoch"] = [h.get("val_recall@10") for h in history]
    record["train_sequences_per_s"] = float(np.mean([h["train_sequences_per_s"] for h in history]))
    peaks = [h["peak_gpu_mem_mb"] for h in history if h.get("peak_gpu_mem_mb") is not None]
    record["peak_gpu_mem_mb"] = max(peaks) if peaks else None


def record_config(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.startswith(("val_", "test_"))}
