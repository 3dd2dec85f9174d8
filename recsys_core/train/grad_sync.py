"""How the processes of a data-parallel run average their gradients inside the fixed-shape
training step (train_step.TrainStep). The step runs the module itself, not DDP's wrapper, and
calls `begin()` before its backward and `finish()` after it; then every process holds the mean
of the processes' gradients (their sum over the processes, divided by their number).

- `flat` (FlatSync): after the backward, one all-reduce of every gradient in one flat buffer.
- `overlap` (OverlapSync): DDP's scheme. The parameters are split into buckets of about
  `grad_bucket_mb` in reverse registration order (roughly the order in which the backward
  produces their gradients); the gradient hook of a bucket's last parameter copies the bucket's
  gradients into its buffer and launches its all-reduce (async), while the backward goes on
  with the layers below; `finish()` waits on them.

Both give the same numbers on two processes, to the bit: each element of the sum is a + b
(IEEE addition is commutative) and the division by 2 is the same operation. With more
processes the all-reduce's chunking (ring, tree) depends on the buffer's length, so the sums
may be associated differently and differ in the last bit.

Both can be captured in a CUDA graph: the overlap buffers are allocated once (the graph keeps
their addresses), the hooks run during the capture (their Python counts only decide where the
all-reduces go in the graph) and nothing syncs with the host. Under a capture the hooks run in
autograd's device thread, on the stream of the backward, so NCCL sees the capturing stream.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


class FlatSync:
    """One all-reduce of all gradients, after the backward."""

    def __init__(self, params: list[torch.nn.Parameter], world: int):
        self.params, self.world = params, world

    def begin(self) -> None:
        pass

    def finish(self) -> None:
        grads = [p.grad for p in self.params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat.div_(self.world)
        torch._foreach_copy_(grads, [v.view_as(g) for v, g in
                                     zip(flat.split([g.numel() for g in grads]), grads)])

    def describe(self) -> str:
        return "flat all-reduce"


def plan_buckets(params: list[torch.nn.Parameter], cap_bytes: int) -> list[list[int]]:
    """Indices into `params`, in buckets of at most `cap_bytes` (a larger parameter alone),
    filled in reverse order; a new bucket also where dtype or device changes."""
    buckets: list[list[int]] = []
    size, kind = 0, None
    for i in reversed(range(len(params))):
        p = params[i]
        nbytes = p.numel() * p.element_size()
        if not buckets or (p.dtype, p.device) != kind or size + nbytes > cap_bytes:
            buckets.append([])
            size, kind = 0, (p.dtype, p.device)
        buckets[-1].append(i)
        size += nbytes
    return buckets


class OverlapSync:
    """Bucketed all-reduces launched from the gradient hooks, during the backward."""

    def __init__(self, params: list[torch.nn.Parameter], world: int, bucket_mb: float):
        self.params, self.world = params, world
        self.buckets = plan_buckets(params, int(bucket_mb * 2**20))
        self.buffers: list[torch.Tensor] = []
        self.slots: list[torch.Tensor | None] = [None] * len(params)   # views into the buffers
        for b, members in enumerate(self.buckets):
            first = params[members[0]]
            buffer = torch.zeros(sum(params[i].numel() for i in members), dtype=first.dtype,
                                 device=first.device)
            for i, view in zip(members, buffer.split([params[i].numel() for i in members])):
                self.slots[i] = view.view_as(params[i])
                params[i].register_post_accumulate_grad_hook(lambda _, b=b: self._ready(b))
            self.buffers.append(buffer)
        self.armed = False
        self.ready = [0] * len(self.buckets)
        self.works: list = [None] * len(self.buckets)

    def begin(self) -> None:
        """Arm the hooks for this step's backward (other backward passes, e.g. the fused
        loss's check, launch nothing)."""
        self.armed = True
        self.ready = [0] * len(self.buckets)
        self.works = [None] * len(self.buckets)

    def _ready(self, b: int) -> None:
        """A gradient of bucket b is complete (autograd's post-accumulate hook)."""
        if not self.armed:
            return
        self.ready[b] += 1
        if self.ready[b] == len(self.buckets[b]):
            self._launch(b)

    def _launch(self, b: int) -> None:
        members = self.buckets[b]
        have = [i for i in members if self.params[i].grad is not None]
        torch._foreach_copy_([self.slots[i] for i in have], [self.params[i].grad for i in have])
        for i in members:
            if self.params[i].grad is None:     # no gradient this step (an unused parameter)
                self.slots[i].zero_()
        self.works[b] = dist.all_reduce(self.buffers[b], async_op=True)

    def finish(self) -> None:
        for b, work in enumerate(self.works):
            if work is None:        # a bucket with a gradient that never arrived (unused)
                self._launch(b)
        self.armed = False
        for b, work in enumerate(self.works):
            work.wait()             # on a GPU: the current stream waits for the all-reduce
            self.buffers[b].div_(self.world)
        have = [i for i, p in enumerate(self.params) if p.grad is not None]
        torch._foreach_copy_([self.params[i].grad for i in have], [self.slots[i] for i in have])

    def describe(self) -> str:
        mb = sum(b.numel() * b.element_size() for b in self.buffers) / 2**20
        return f"overlapped all-reduce ({len(self.buckets)} buckets, {mb:.0f} MB)"


def make_grad_sync(cfg, params: list[torch.nn.Parameter], world: int):
    """The gradient averaging `cfg.grad_sync` names (world > 1)."""
    if cfg.grad_sync == "overlap":
        return OverlapSync(params, world, cfg.grad_bucket_mb)
    return FlatSync(params, world)


@torch.no_grad()
def broadcast_parameters(params: list[torch.nn.Parameter]) -> None:
    """Every process starts from process 0's weights (what DDP's constructor does): the step
    keeps them equal afterwards, as every process applies the same averaged update."""
    for p in params:
        dist.broadcast(p.data, src=0)
