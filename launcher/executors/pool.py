"""The local executor's GPUs: a number of places on each, one per cell that may run on it at
once (`--cells-per-gpu`). A cell leases the GPUs it needs; a lease remembers how crowded its
GPUs were while it held them (the out-of-memory retries ask: oom.py), and a GPU's places can
be lowered while the run goes on (never below one; cells already on it finish). Where a GPU's
memory is known, a lease also holds the memory its cell is expected to need (memory.py), and a
GPU running cells takes another only while their needs fit."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass(eq=False)
class Lease:
    gpus: list[str]
    # per GPU, the most of this run's cells on it at once while this lease held it (itself too)
    crowd: dict[str, int] = field(default_factory=dict)
    need_mb: float = 0.0          # the GPU memory its cell is expected to need on each GPU
    memory_wait_s: float = 0.0    # how long it waited with places free but no memory

    def shared(self) -> list[str]:
        """Its GPUs on which another cell ran beside it."""
        return [g for g in self.gpus if self.crowd.get(g, 1) > 1]


class GpuPool:
    """GPUs with `per_gpu` places each; `take(n)` blocks until n distinct GPUs have a free
    place and leases the least loaded ones."""

    def __init__(self, gpus: list[str], per_gpu: int, memory_mb: dict[str, float] | None = None):
        self.places = {g: per_gpu for g in gpus}
        self.free = dict(self.places)
        self.memory_mb = {g: mb for g, mb in (memory_mb or {}).items() if g in self.places}
        self.used_mb = {g: 0.0 for g in gpus}
        self.leases: list[Lease] = []
        self.cond = threading.Condition()

    def _room(self, g: str, need_mb: float) -> bool:
        """A free place on g, and the memory for `need_mb` (or no cell of this run on g)."""
        if self.free[g] <= 0:
            return False
        if need_mb <= 0 or g not in self.memory_mb or not any(g in h.gpus for h in self.leases):
            return True
        return self.used_mb[g] + need_mb <= self.memory_mb[g]

    def take(self, n: int, prefer: list[str] = (), need_mb: float = 0.0) -> Lease:
        """n GPUs with room for a cell needing `need_mb` on each (0: unknown, places only);
        for one, a `prefer`red one (where the slot's worker is) if it has room."""
        if n == 0:
            return Lease([])
        with self.cond:
            waited, since = 0.0, None
            while len(ready := [g for g in self.free if self._room(g, need_mb)]) < n:
                if since is None and sum(1 for v in self.free.values() if v > 0) >= n:
                    since = time.monotonic()      # places, but not the memory
                self.cond.wait()
                if since is not None:
                    waited, since = waited + time.monotonic() - since, None
            chosen = sorted(ready, key=lambda g: -self.free[g])[:n]
            room = [g for g in prefer if g in ready]
            if n == 1 and room:
                chosen = room[:1]
            lease = Lease(chosen, need_mb=need_mb, memory_wait_s=waited)
            self.leases.append(lease)
            for g in chosen:
                self.free[g] -= 1
                self.used_mb[g] += need_mb
                on_it = [held for held in self.leases if g in held.gpus]
                for held in on_it:
                    held.crowd[g] = max(held.crowd.get(g, 1), len(on_it))
            return lease

    def give(self, lease: Lease) -> None:
        with self.cond:
            if lease in self.leases:
                self.leases.remove(lease)
            for g in lease.gpus:
                self.free[g] += 1
                self.used_mb[g] -= lease.need_mb
            self.cond.notify_all()

    def limit(self, places: dict[str, int]) -> dict[str, int]:
        """At most these places on these GPUs (at least one; GPUs not in the pool are
        ignored); the GPUs whose places this lowered, and their places now."""
        lowered = {}
        with self.cond:
            for g, n in places.items():
                n = max(int(n), 1)
                if g in self.places and n < self.places[g]:
                    self.free[g] -= self.places[g] - n
                    self.places[g] = lowered[g] = n
        return lowered

    def lower(self, crowd: dict[str, int]) -> dict[str, int]:
        """Fewer places than `crowd` cells on each of these GPUs (never below one; a GPU
        already below that keeps its places); their places now."""
        with self.cond:
            for g, n in crowd.items():
                fewer = max(1, min(self.places[g], n - 1))
                self.free[g] -= self.places[g] - fewer  # below zero while more cells than places run
                self.places[g] = fewer
            return {g: self.places[g] for g in crowd}
