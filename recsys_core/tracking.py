"""Experiment tracking: Weights & Biases (offline-first) and optional TensorBoard.

Only the main process logs. One W&B run per cell, id = the cell id, resume="allow". Offline
runs cannot be resumed in place: a requeued job writes a new `offline-run-*` directory for the
same id, so every fragment is recorded in `wandb_fragments.json`, and the step is the epoch
number, continuing across fragments; `wandb sync --id ID DIR1 DIR2 ...` uploads them as one run.
The API key is read by wandb from the environment and is never written anywhere by us.

`wandb.init` runs in a background thread: its imports and service start take seconds (3-5 s
on the project's CPU VM, most of a Beauty cell's setup), and the first epochs train meanwhile
(on a GPU the main thread mostly waits for the device, with the GIL released). Metrics logged
before the run is ready are kept and logged in order once it is; `finish` waits for it.

Tracking never costs a result: whatever W&B does (init, log or finish fails or times out, no
network, a server that does not answer), the cell trains on and writes its files. An online
start that fails falls back to an offline run (a directory `wandb sync` uploads later); the
reason ends up in the result as `tracking_error`. Time lost to an unreachable server is bounded
by `WANDB_INIT_TIMEOUT` (default 25 s, in the background while the first epochs train) and
`RECSYS_WANDB_FINISH_TIMEOUT` (default 30 s).
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path


OFFLINE_WORDS = {"offline": "offline", "dryrun": "offline", "disabled": "disabled"}


def wandb_mode(requested: str) -> str:
    """The W&B mode a run uses. `WANDB_MODE=offline|dryrun|disabled` in the environment (a node
    without network) always wins over the config; `auto` is online only where an API key is
    set and the environment says nothing else."""
    if requested == "disabled":
        return "disabled"
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env in OFFLINE_WORDS:
        return OFFLINE_WORDS[env]
    if requested != "auto":
        return requested
    if env == "online":
        return "online"
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}"


def _seconds(env: str, default: float) -> float:
    try:
        return float(os.environ.get(env, default))
    except ValueError:
        return default


class Tracker:
    def __init__(self, cfg, out: Path, *, enabled: bool, run_id: str, start_epoch: int,
                 config: dict):
        self.out = Path(out)
        self.run = None
        self.tb = None
        self.errors: list[str] = []       # what went wrong with W&B: the result's tracking_error
        self.mode: str | None = None      # the mode the run got: online, offline (or None)
        self._starting: threading.Thread | None = None
        self._pending: list[tuple[dict, int]] = []
        if not enabled:
            return
        mode = wandb_mode(cfg.wandb_mode)
        if mode != "disabled":
            os.environ.setdefault("WANDB_SILENT", "true")
            os.environ.setdefault("WANDB_DISABLE_GIT", "true")
            self._starting = threading.Thread(
                target=self._start_wandb, args=(cfg, mode, run_id, start_epoch, config),
                name="wandb-init", daemon=True)
            self._starting.start()
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(self.out / "tensorboard"))

    @property
    def error(self) -> str | None:
        return "; ".join(self.errors) or None

    def _start_wandb(self, cfg, mode: str, run_id: str, start_epoch: int, config: dict) -> None:
        try:
            import wandb
        except BaseException as e:  # noqa: BLE001 -- never fatal to the cell
            self.errors.append(f"import wandb failed ({_short(e)})")
            return

        def start(mode: str):
            return wandb.init(
                project=cfg.wandb_project, entity=cfg.wandb_entity, group=cfg.wandb_group,
                job_type=cfg.model, tags=[cfg.dataset, cfg.model, f"max_len={cfg.max_len}"],
                id=run_id, resume="allow", dir=str(self.out), mode=mode, config=config,
                settings=wandb.Settings(x_disable_stats=True, console="off",
                                        init_timeout=_seconds("WANDB_INIT_TIMEOUT", 25.0)))
        try:
            run = start(mode)
        except BaseException as e:  # noqa: BLE001 -- never fatal to the cell
            self.errors.append(f"wandb.init ({mode}) failed ({_short(e)})")
            if mode != "online":
                return
            try:
                wandb.teardown()        # the failed run keeps its id in the service otherwise
                mode = "offline"
                run = start(mode)
                self.errors[-1] += "; fell back to an offline run (`wandb sync` it later)"
            except BaseException as e2:  # noqa: BLE001
                self.errors.append(f"offline fallback failed too ({_short(e2)})")
                return
        if run is None:
            self.errors.append(f"wandb.init ({mode}) returned no run")
            return
        self.mode = mode
        try:
            self._record_fragment(run, mode, start_epoch)
        except OSError as e:
            self.errors.append(f"could not record the W&B run directory ({_short(e)})")
        # Set last: the trainer's thread reads it (log, finish) once this thread has ended.
        self.run = run

    def _ready(self, wait: bool) -> bool:
        """True once the W&B run is started (after logging what was kept meanwhile); with
        `wait`, waits for it, but no longer than an online start and its offline fallback
        may take: a start that hangs past its own timeout is left behind."""
        if self._starting is not None:
            if not wait and self._starting.is_alive():
                return False
            limit = 2 * _seconds("WANDB_INIT_TIMEOUT", 25.0) + 10
            self._starting.join(limit)
            if self._starting.is_alive():
                self.errors.append(f"wandb.init did not return in {limit:.0f} s; "
                                   "no W&B run for this cell")
                self._starting, self._pending = None, []
                return False
            self._starting = None
            for metrics, step in self._pending:
                self._log_wandb(metrics, step)
            self._pending.clear()
        return self.run is not None

    def _record_fragment(self, run, mode: str, start_epoch: int) -> None:
        from recsys_core.atomic import atomic_write_text
        path = self.out / "wandb_fragments.json"
        fragments = json.loads(path.read_text()) if path.exists() else []
        fragments.append({"run_id": run.id, "dir": str(Path(run.dir).parent),
                          "mode": mode, "start_epoch": start_epoch, "started_at": time.time()})
        atomic_write_text(path, json.dumps(fragments, indent=1) + "\n")

    def _log_wandb(self, metrics: dict, step: int) -> None:
        if self.run is None:
            return
        try:
            self.run.log(metrics, step=step)
        except Exception as e:  # noqa: BLE001 -- W&B stops; training does not
            self.errors.append(f"wandb log failed at step {step}, W&B logging stopped ({_short(e)})")
            self.run = None

    def log(self, metrics: dict, step: int) -> None:
        clean = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and v is not None}
        if self._starting is not None and not self._ready(wait=False):
            self._pending.append((clean, step))
        else:
            self._log_wandb(clean, step)
        if self.tb is not None:
            for k, v in clean.items():
                self.tb.add_scalar(k, v, step)

    def finish(self, summary: dict, exit_code: int = 0) -> None:
        """Close the run (bounded: a finish that hangs on the network is left behind, its
        files stay for `wandb sync`). Never raises."""
        self._ready(wait=True)
        if self.run is not None:
            run, self.run = self.run, None

            def close():
                for k, v in summary.items():
                    if isinstance(v, (int, float, str)) and v is not None:
                        run.summary[k] = v
                run.finish(exit_code=exit_code)
            failure: list[BaseException] = []
            worker = threading.Thread(target=lambda: _capture(close, failure),
                                      name="wandb-finish", daemon=True)
            worker.start()
            limit = _seconds("RECSYS_WANDB_FINISH_TIMEOUT", 30.0)
            worker.join(limit)
            if worker.is_alive():
                self.errors.append(f"wandb finish did not return in {limit:.0f} s; its files "
                                   f"are in {run.dir} (`wandb sync` them)")
            elif failure:
                self.errors.append(f"wandb finish failed ({_short(failure[0])})")
        if self.tb is not None:
            self.tb.close()


def _capture(fn, failure: list) -> None:
    try:
        fn()
    except BaseException as e:  # noqa: BLE001 -- reported by the caller
        failure.append(e)
