"""Run under `accelerate launch --num_processes 2` (CPU, gloo) by test_train_step: the
data-parallel step body of train_step.TrainStep (what the graph captures on GPUs, run eagerly)
against the trainer's eager DDP loop, from the same weights, for two epochs, with each way of
averaging the gradients (grad_sync flat and overlap); and a step whose capture fails on
process 1 only (fault injected), which must leave both processes eager and training as the
flat step does. Rank 0 writes what it saw as JSON to argv[2]; the test compares."""
import json
import sys

import torch

from recsys_core.cli import exit_cli
from recsys_core.train import TrainConfig
from recsys_core.train.loop import train_epoch
from recsys_core.train.setup import build_run
from recsys_core.train.train_step import TrainStep

model_name, out = sys.argv[1], sys.argv[2]
cfg = TrainConfig(dataset="synthetic", synthetic={"n_users": 90, "n_items": 50,
                                                  "n_interactions": 2500, "seed": 3},
                  max_len=12, embedding_dim=16, num_heads=2, num_blocks=1, batch_size=30,
                  dropout=0.0, wandb_mode="disabled", device="cpu", model=model_name,
                  grad_clip=0.5, num_processes=2, grad_bucket_mb=0.004)   # a few buckets
loop = build_run(cfg)
twins = {name: build_run(cfg.model_copy(update={"grad_sync": name.removesuffix("_fallback")}))
         for name in ("flat", "overlap", "flat_fallback")}     # the same seed: the same weights
acc = loop.accelerator
rank = acc.process_index


def failing_capture(step: TrainStep) -> None:
    """What _capture_once leaves behind: a graph on process 0, a failure on process 1."""
    if rank == 0:
        step.graph = "captured"        # dropped before any replay: process 1 has none
    else:
        step.fallback_reason = "capture failed: RuntimeError: injected"


epochs, steps = [], {}
for epoch in (1, 2):
    seen = {"loop": list(train_epoch(loop, epoch))}
    for name, twin in twins.items():
        fallback = name.endswith("_fallback")
        step = TrainStep(twin.cfg, twin.model, twin.optimizer, acc, twin.split, twin.starts,
                         twin.ends, use_graph=fallback)
        if fallback:
            step._capture_once = lambda step=step: failing_capture(step)
        seen[name] = list(step.run_epoch(epoch))
        steps[name] = step
    epochs.append({**seen, "mode": steps["flat"].mode, "steps": steps["flat"].steps})
flat = {name: torch.cat([p.detach().flatten() for p in r.model.parameters()])
        for name, r in (("loop", loop), *twins.items())}
gathered = {k: acc.gather(v.unsqueeze(0)) for k, v in flat.items()}   # [2, n] per run
fallback = steps["flat_fallback"]
reasons = [None, None]
torch.distributed.all_gather_object(reasons, [fallback.mode, fallback.fallback_reason])
if acc.is_main_process:
    w = {k: v[0] for k, v in gathered.items()}
    with open(out, "w") as f:
        json.dump({"epochs": epochs, "n_windows": len(loop.starts),
                   "buckets": len(steps["overlap"].sync.buckets),
                   "describe": {k: s.describe() for k, s in steps.items()},
                   "ranks_identical": {k: bool(torch.equal(v[0], v[1]))
                                       for k, v in gathered.items()},
                   "max_weight_diff": float((w["flat"] - w["loop"]).abs().max()),
                   "overlap_equals_flat": bool(torch.equal(w["overlap"], w["flat"])),
                   "fallback_max_diff": float((w["flat_fallback"] - w["flat"]).abs().max()),
                   "fallback": reasons}, f)
exit_cli(0)   # leaves the process group, and the process before gloo's teardown
