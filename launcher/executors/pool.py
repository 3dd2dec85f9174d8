"""The local executor's GPUs: a number of places on each, one per cell that may run on it at
once (`--cells-per-gpu`). A cell leases the GPUs it needs; a lease remembers how crowded its
GPUs were while it held them (the out-of-memory retries ask: oom.py), and a GPU's places can
be lowered while the run goes on (never below one; cells already on it finish)."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass(eq=False)
class Lease:
    gpus: list[str]
    # per GPU, the most of this run's cells on it at once while this lease held it (itself too)
    crowd: dict[str, int] = field(default_factory=dict)

    def shared(self) -> list[str]:
        """Its GPUs on which another cell ran beside it."""
        return [g for g in self.gpus if self.crowd.get(g, 1) > 1]


class GpuPool:
    """GPUs with `per_gpu` places each; `take(n)` blocks until n distinct GPUs have a free
    place and leases the least loaded ones."""

    def __init__(self, gpus: list[str], per_gpu: int):
        self.places = {g: per_gpu for g in gpus}
        self.free = dict(self.places)
        self.leases: list[Lease] = []
        self.cond = threading.Condition()

    def take(self, n: int, prefer: list[str] = ()) -> Lease:
        """n GPUs; for one, a `prefer`red one (where the slot's worker is) if it has room."""
        if n == 0:
            return Lease([])
        with self.cond:
            while sum(1 for v in self.free.values() if v > 0) < n:
                self.cond.wait()
            chosen = sorted(self.free, key=lambda g: -self.free[g])[:n]
            room = [g for g in prefer if self.free.get(g, 0) > 0]
            if n == 1 and room:
                chosen = room[:1]
            lease = Lease(chosen)
            self.leases.append(lease)
            for g in chosen:
                self.free[g] -= 1
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
