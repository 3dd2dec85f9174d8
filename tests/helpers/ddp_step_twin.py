"""Run under `accelerate launch --num_processes 2` (CPU, gloo) by test_train_step: the
data-parallel step body of train_step.TrainStep (explicit all-reduce, run eagerly: what the
graph captures on GPUs) against the trainer's eager DDP loop, from the same weights, for two
epochs. Rank 0 writes what it saw as JSON to argv[2]; the test compares."""
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
                  grad_clip=0.5, num_processes=2)
loop, twin = build_run(cfg), build_run(cfg)      # the same seed: the same weights
acc, starts = loop.accelerator, loop.starts
model = loop.model
epochs = []
for epoch in (1, 2):
    a = train_epoch(loop, epoch)
    step = TrainStep(cfg, twin.model, twin.optimizer, acc, twin.split, twin.starts, twin.ends,
                     use_graph=False)
    b = step.run_epoch(epoch)
    epochs.append({"loop": list(a), "step": list(b), "mode": step.mode, "steps": step.steps})
flat = {name: torch.cat([p.detach().flatten() for p in m.parameters()])
        for name, m in (("loop", model), ("step", twin.model))}
gathered = {k: acc.gather(v.unsqueeze(0)) for k, v in flat.items()}   # [2, n] per model
if acc.is_main_process:
    loop, step = gathered["loop"], gathered["step"]
    with open(out, "w") as f:
        json.dump({"epochs": epochs, "n_windows": len(starts),
                   "ranks_identical": bool(torch.equal(step[0], step[1])),
                   "max_weight_diff": float((step[0] - loop[0]).abs().max())}, f)
exit_cli(0)   # leaves the process group, and the process before gloo's teardown
