"""The GPU epoch benchmark's check of the CUDA-graph step (with its fused loss) against the same
fixed-shape step run eagerly with the model's loss: dropout 0, same seed, same batches, one
epoch; per-step losses, epoch loss and gradient norm, and the weights after the epoch."""
from __future__ import annotations

import gc
from typing import Callable

import torch

from benchmarks.run_setup import setup_run
from recsys_core.train.train_step import TrainStep


def check_graph(config: Callable[[bool], object], data, split_cpu, log) -> dict:
    """`config(use_graph)`: the run's TrainConfig for the eager (False) and the graph (True)
    step. BERT4Rec's masks are random draws, which differ between the two, so its losses
    agree only in distribution."""
    split = split_cpu.to(torch.device("cuda"))
    out = {}
    for use_graph in (False, True):
        run = setup_run(config(use_graph), data, split)
        step = TrainStep(run.cfg, run.model, run.optimizer, run.accelerator, split, run.starts,
                         run.ends, use_graph=use_graph, record_losses=True, fused_loss=use_graph)
        loss, norm, _ = step.run_epoch(1)
        out[use_graph] = dict(losses=step.losses.cpu(), loss=loss, norm=norm,
                              mode=step.describe(), loss_path=step.loss_path,
                              reason=step.fallback_reason,
                              weights=torch.cat([p.detach().float().flatten()
                                                 for p in run.model.parameters()]).cpu())
        del run, step
        gc.collect()
    e, g = out[False], out[True]
    rel = ((g["losses"] - e["losses"]).abs() / e["losses"].abs().clamp(min=1e-6))
    wdiff = float((g["weights"] - e["weights"]).norm() / e["weights"].norm())
    cfg = config(True)
    res = dict(model=cfg.model, dataset=cfg.dataset, graph_mode=g["mode"], fallback=g["reason"],
               graph_loss_path=g["loss_path"],
               first_losses_eager=[round(float(x), 4) for x in e["losses"][:6]],
               first_losses_graph=[round(float(x), 4) for x in g["losses"][:6]],
               max_rel_diff_first8=float(rel[:8].max()), max_rel_diff_epoch=float(rel.max()),
               epoch_loss_eager=e["loss"], epoch_loss_graph=g["loss"],
               grad_norm_eager=e["norm"], grad_norm_graph=g["norm"],
               weights_rel_diff_after_epoch=wdiff)
    log(f"  check eager (model loss) vs {g['mode']} ({g['loss_path']}): losses "
        f"{res['first_losses_eager']} vs {res['first_losses_graph']}; max rel diff first 8 "
        f"steps {res['max_rel_diff_first8']:.2e}, epoch {res['max_rel_diff_epoch']:.2e}; "
        f"epoch loss {e['loss']:.5f} vs {g['loss']:.5f}; weights rel diff {wdiff:.2e}"
        + (f"; fallback: {g['reason']}" if g["reason"] else ""))
    return res
