"""One cell, top to bottom: data → model → epochs (train, validate, early stop, checkpoint) →
test of the best checkpoint → result files. Runs the same on CPU, one GPU or several through
Accelerate; only the main process writes files and logs.
"""
from __future__ import annotations

import math
import os
import random
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs

from recsys_core.data import LeaveOneOut, load_dataset
from recsys_core.models import build_model
from recsys_core.telemetry import GpuTelemetry
from recsys_core.tracking import Tracker
from recsys_core.train import checkpoint as ckpt
from recsys_core.train import fast_step
from recsys_core.train.batches import epoch_batches, training_batch
from recsys_core.train.config import TrainConfig
from recsys_core.train.evaluate import evaluate, user_loader
from recsys_core.train.optim import make_optimizer, make_scheduler, step_scheduler
from recsys_core.train.record import base_record, predictions
from recsys_core.train.results import write_history, write_predictions, write_result


class NonFiniteLoss(RuntimeError):
    pass


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    check_runtime(cfg)
    cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
    precision = cfg.mixed_precision
    if precision == "auto":
        precision = "no" if cpu else "bf16"
    return Accelerator(cpu=cpu, mixed_precision=precision,
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)])


def progress_line(epoch: int, cap: int, loss: float, monitor: str, value: float,
                  state: ckpt.TrainState, seconds: float) -> str:
    return (f"epoch {epoch:>{len(str(cap))}}/{cap}  loss {loss:.4f}  {monitor} {value:.4f}  "
            f"best {state.best_metric:.4f} @{state.best_epoch}  {seconds:.1f}s")


def run(cfg: TrainConfig, progress=None) -> dict:
    """Train and evaluate one cell; always leaves result files, FAILED with a reason if it
    failed. Returns the result record (raises after recording if the run crashed).
    `progress` (e.g. print) gets one line per epoch from the main process."""
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
    if main:
        out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    record = base_record(cfg, accelerator)
    say = progress if (progress is not None and main) else (lambda line: None)
    history: list[dict] = []
    tracker = None
    writer = ckpt.Writer()
    try:
        data = load_dataset(cfg.dataset, min_user_interactions=cfg.min_user_interactions,
                            mirror=cfg.data_mirror, synthetic=cfg.synthetic or None)
        split = LeaveOneOut.from_data(data, accelerator.device)
        record.update(dataset_users=data.n_users, dataset_items=data.n_items,
                      dataset_interactions=data.n_interactions,
                      data_mirror=data_mirror_used(cfg))
        model = build_model(cfg.model, data.n_items, cfg, accelerator.device.type).to(accelerator.device)
        record.update({f"params_{k}": v for k, v in model.param_counts().items()})
        loader = accelerator.prepare(user_loader(data.n_users, cfg.eval_batch_size))
        state = ckpt.TrainState()
        graph_step = None
        trainable = model.trainable          # read before DDP wraps the model
        if trainable:
            lr = cfg.lr * (accelerator.num_processes if cfg.lr_scale_with_processes else 1)
            record["lr_effective"] = lr
            # --- CUDA-graph training step (fast_step.py): capturable optimiser where it can run
            graphs = fast_step.graph_unsupported_reason(cfg, accelerator) is None
            record["train_step"] = "cuda_graph" if graphs else "eager"
            optimizer = make_optimizer(cfg, model, lr, capturable=graphs)
            # ---
            model, optimizer = accelerator.prepare(model, optimizer)
            starts, ends = split.train_windows(cfg.max_len, cfg.train_windows)
            steps_per_epoch = math.ceil(len(starts) // accelerator.num_processes / cfg.batch_size)
            scheduler = make_scheduler(cfg, optimizer, steps_per_epoch)
            state = ckpt.resume(out, cfg, accelerator, model, optimizer, scheduler)
            history = state.history
            # --- None where the eager loop runs (CPU, DDP, cuda_graphs=false, inject_fault)
            graph_step = fast_step.for_run(cfg, model, optimizer, accelerator, split, starts, ends)
            if graph_step is None and cfg.compile_encoder:
                record["train_step"] += " (compile_encoder applies to the fixed-shape step only)"
            # ---
            record["resumed_from_epoch"] = state.epoch if state.epoch else None
        else:
            model.fit(split.train_item_counts())
        tracker = Tracker(cfg, out, enabled=main, run_id=record["run_id"],
                          start_epoch=state.epoch + 1, config=record_config(record))
        telemetry = GpuTelemetry(accelerator.device)
        eval_args = dict(max_len=cfg.max_len, filter_seen=cfg.filter_seen, ks=cfg.ks,
                         loader=loader, accelerator=accelerator)
        monitor = cfg.monitored

        # where the wall time goes (setup, epochs, per-epoch saving, final test and files)
        times = {"time_setup_s": time.time() - t0, "time_epochs_s": 0.0, "time_saving_s": 0.0}
        while trainable and not state.stopped and state.epoch < cfg.epochs:
            epoch = state.epoch + 1
            t_epoch = time.time()
            loss, grad_norm, n_seq = train_epoch(cfg, model, optimizer, scheduler, split,
                                                 starts, ends, epoch, accelerator, graph_step)
            if graph_step is not None:   # what ran: graph or eager (capture failed), which loss
                record["train_step"] = graph_step.describe()
                record["time_capture_s"] = graph_step.capture_time_s
            train_time = time.time() - t_epoch
            if not math.isfinite(loss):
                raise NonFiniteLoss(f"non-finite training loss ({loss}) in epoch {epoch}")
            t_eval = time.time()
            val = evaluate(model, split, "val", **eval_args)
            eval_time = time.time() - t_eval
            if cfg.scheduler == "plateau":
                scheduler.step(val[monitor])
            elif cfg.scheduler in ("step", "cosine"):
                scheduler.step()
            state.observe(epoch, val[monitor], cfg.patience)
            row = {"epoch": epoch, "train_loss": loss, "grad_norm": grad_norm,
                   "lr": float(optimizer.param_groups[0]["lr"]), "epoch_time_s": time.time() - t_epoch,
                   "train_time_s": train_time, "eval_time_s": eval_time,
                   "train_sequences_per_s": n_seq / max(train_time, 1e-9),
                   **val, **telemetry.read()}
            history.append(row)
            state.history = history
            say(progress_line(epoch, cfg.epochs, loss, monitor, val[monitor], state,
                              time.time() - t_epoch))
            t_save = time.time()
            times["time_epochs_s"] += t_save - t_epoch
            if main:   # the checkpoint files are written in the background (ckpt.Writer)
                if state.best_epoch == epoch:
                    writer.save_best(out, accelerator.unwrap_model(model))
                writer.save(out, cfg, accelerator, model, optimizer, scheduler, state)
                write_history(out, history)
                tracker.log(row, step=epoch)
            accelerator.wait_for_everyone()
            times["time_saving_s"] += time.time() - t_save
            if cfg.epoch_sleep_s:
                time.sleep(cfg.epoch_sleep_s)

        t_final = time.time()
        writer.wait()
        # Only the main process writes best_model.pt (in the background): every process reads
        # it only once that write has finished.
        accelerator.wait_for_everyone()
        if trainable and state.best_epoch:
            ckpt.load_best(out, accelerator.unwrap_model(model), accelerator.device)
        val = evaluate(model, split, "val", **eval_args)
        test = evaluate(model, split, "test", **eval_args)
        record.update(val)
        record.update(test)
        record.update(status="COMPLETED", reason=None, best_epoch=state.best_epoch or None,
                      epochs_run=state.epoch, stopped_early=state.stopped,
                      cuda_graphs=graph_step is not None and graph_step.mode == "graph")
        summarize_history(record, history)
        if main:
            write_history(out, history)
            write_predictions(out, predictions(accelerator.unwrap_model(model), split, data, cfg))
            tracker.finish(record)
            record.update(tracking_error=tracker.error, tracking_mode=tracker.mode)
        record["wall_time_s"] = time.time() - t0
        record.update(times, time_final_s=time.time() - t_final)
        if main:
            write_result(out, record)
        return record
    except Exception as e:
        try:
            writer.wait()    # the last good epoch's checkpoint on disk: what a resume reads
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


def data_mirror_used(cfg: TrainConfig) -> str | None:
    """The mirror directory the dataset's files are read from (the option, else
    $RECSYS_DATA_MIRROR); None for generated data or where no mirror is set."""
    from recsys_core.data.fetch import mirror_root
    from recsys_core.data.names import SYNTHETIC
    root = None if cfg.dataset in SYNTHETIC else mirror_root(cfg.data_mirror)
    return str(root.resolve()) if root is not None else None


def train_epoch(cfg, model, optimizer, scheduler, split, starts, ends, epoch, accelerator,
                graph_step=None):
    """One pass over this process's share of the training windows. The loss and gradient norm
    are summed on the device and read once at the end: no host sync inside the step loop.
    With `graph_step` (fast_step.TrainStep) the same epoch runs as CUDA-graph replays."""
    if graph_step is not None:
        return graph_step.run_epoch(epoch, scheduler)
    model.train()
    loss_sum = torch.zeros((), device=accelerator.device)
    norm_sum = torch.zeros((), device=accelerator.device)
    steps, n_seq = 0, 0
    unwrapped = accelerator.unwrap_model(model)
    fault, _, fault_epoch = cfg.inject_fault.partition("@")
    for idx in epoch_batches(len(starts), cfg.batch_size, cfg.seed, epoch,
                             accelerator.process_index, accelerator.num_processes,
                             accelerator.device):
        inputs, targets, negatives = training_batch(cfg, unwrapped, split, starts[idx], ends[idx])
        loss = model(inputs, targets, negatives)
        if fault and int(fault_epoch) == epoch:
            if fault == "raise":
                raise RuntimeError(f"injected failure in epoch {epoch} (inject_fault={cfg.inject_fault})")
            loss = loss * float("nan")
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        if cfg.grad_clip > 0:
            norm_sum += accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip).detach()
        optimizer.step()
        if cfg.scheduler == "onecycle":
            step_scheduler(scheduler)
        loss_sum += loss.detach()
        steps += 1
        n_seq += len(idx)
    stats = accelerator.reduce(torch.stack([loss_sum, norm_sum]), reduction="mean")
    steps = max(steps, 1)
    return float(stats[0]) / steps, float(stats[1]) / steps, n_seq * accelerator.num_processes


def summarize_history(record: dict, history: list[dict]) -> None:
    if not history:
        record.setdefault("epoch_time_s", None)
        return
    record["epoch_time_s"] = float(np.mean([h["epoch_time_s"] for h in history]))
    # The validation curve travels in the result itself: aggregating a sweep's curves then
    # needs no history file per cell.
    record["val_recall@10_by_epoch"] = [h.get("val_recall@10") for h in history]
    record["train_sequences_per_s"] = float(np.mean([h["train_sequences_per_s"] for h in history]))
    peaks = [h["peak_gpu_mem_mb"] for h in history if h.get("peak_gpu_mem_mb") is not None]
    record["peak_gpu_mem_mb"] = max(peaks) if peaks else None


def close_process_group() -> bool:
    """Leave the process group (several processes) before the interpreter exits: a gloo group
    torn down by the exit itself can abort a process ("terminate called without an active
    exception"), which fails the whole `accelerate launch`. True if there was one."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        return True
    return False


def exit_cli(code: int):
    """End a command-line entry point with `code`. A process started as one of several
    (WORLD_SIZE > 1) leaves the process group, if still in it, and exits at once, output
    flushed, skipping interpreter teardown: there gloo's threads abort a process now and then,
    also with the group destroyed beforehand (seen in 1-2 of 12-20 two-process CPU runs on the
    2-core VM), failing a run whose files are all written."""
    close_process_group()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:     # set by accelerate launch / torchrun
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def record_config(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.startswith(("val_", "test_"))}


def check_runtime(cfg: TrainConfig) -> None:
    """What can be known to fail before any work: a device that is not there."""
    from recsys_core.train.config import ConfigError
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is visible here "
                          "(use --device cpu, or auto)")


def main(argv: list[str] | None = None) -> int:
    from recsys_core.train.config import ConfigError, parse_cli
    try:
        cfg, quiet = parse_cli(argv)
        check_runtime(cfg)
    except ConfigError as e:
        print(f"python -m recsys_core.train: error: {e}", file=sys.stderr)
        return 2
    try:
        record = run(cfg, progress=None if quiet else print_progress)
    finally:
        close_process_group()
    print(f"{record['status']}: test recall@10 {record.get('test_recall@10')} "
          f"ndcg@10 {record.get('test_ndcg@10')} → {Path(cfg.out) / 'result.json'}", flush=True)
    return 0 if record["status"] == "COMPLETED" else 1


def print_progress(line: str) -> None:
    """A progress line on stdout, at once (a SLURM log shows it). A reader that went away
    (`... | head`) ends the lines, never the run: the result files matter, the lines do not."""
    try:
        print(line, flush=True)
    except (BrokenPipeError, ValueError, OSError):
        pass
