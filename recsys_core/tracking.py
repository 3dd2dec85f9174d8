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
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path


def wandb_mode(requested: str) -> str:
    if requested != "auto":
        return requested
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


class Tracker:
    def __init__(self, cfg, out: Path, *, enabled: bool, run_id: str, start_epoch: int,
                 config: dict):
        self.out = Path(out)
        self.run = None
        self.tb = None
        self._starting: threading.Thread | None = None
        self._start_error: BaseException | None = None
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

    def _start_wandb(self, cfg, mode: str, run_id: str, start_epoch: int, config: dict) -> None:
        try:
            import wandb
            run = wandb.init(
                project=cfg.wandb_project, entity=cfg.wandb_entity, group=cfg.wandb_group,
                job_type=cfg.model, tags=[cfg.dataset, cfg.model, f"max_len={cfg.max_len}"],
                id=run_id, resume="allow", dir=str(self.out), mode=mode, config=config,
                settings=wandb.Settings(x_disable_stats=True, console="off"))
            self.run = run
            self._record_fragment(mode, start_epoch)
        except BaseException as e:  # noqa: BLE001 -- raised in the main thread by _ready
            self._start_error = e

    def _ready(self, wait: bool) -> bool:
        """True once the W&B run is started (after logging what was kept meanwhile); with
        `wait`, waits for it. A failed start raises here, in the main thread."""
        if self._starting is not None:
            if not wait and self._starting.is_alive():
                return False
            self._starting.join()
            self._starting = None
            if self._start_error is not None:
                raise RuntimeError(f"W&B run {self.out}: wandb.init failed: "
                                   f"{self._start_error}") from self._start_error
            for metrics, step in self._pending:
                self.run.log(metrics, step=step)
            self._pending.clear()
        return self.run is not None

    def _record_fragment(self, mode: str, start_epoch: int) -> None:
        from recsys_core.atomic import atomic_write_text
        path = self.out / "wandb_fragments.json"
        fragments = json.loads(path.read_text()) if path.exists() else []
        fragments.append({"run_id": self.run.id, "dir": str(Path(self.run.dir).parent),
                          "mode": mode, "start_epoch": start_epoch, "started_at": time.time()})
        atomic_write_text(path, json.dumps(fragments, indent=1) + "\n")

    def log(self, metrics: dict, step: int) -> None:
        clean = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and v is not None}
        if self._starting is not None and not self._ready(wait=False):
            self._pending.append((clean, step))
        elif self.run is not None:
            self.run.log(clean, step=step)
        if self.tb is not None:
            for k, v in clean.items():
                self.tb.add_scalar(k, v, step)

    def finish(self, summary: dict, exit_code: int = 0) -> None:
        try:
            self._ready(wait=True)
        except RuntimeError:
            if exit_code == 0:
                raise
            # the job is failing already: its own error is the one to report
        if self.run is not None:
            for k, v in summary.items():
                if isinstance(v, (int, float, str)) and v is not None:
                    self.run.summary[k] = v
            self.run.finish(exit_code=exit_code)
        if self.tb is not None:
            self.tb.close()
