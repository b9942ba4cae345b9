"""What one benchmark run measures: its batch sizes, which of them the targets are judged
at, and how long its loops run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    # 10: the small batches HTTP callers and most upstream systems send (issue 21).
    sizes: tuple[int, ...] = (1, 10, 100, 1000, 10_000)
    # The batch size of the throughput targets: the worker against the raw ceiling and
    # against the naive peer.
    ratio_size: int = 1000
    # The batch size of the latency target and of the widest entity's row.
    latency_size: int = 100
    # The batch sizes also sent through the HTTP gateway.
    gateway_sizes: tuple[int, ...] = (1, 100)
    # Each closed loop runs until this long or its prepared work is used up.
    max_s: float = 5.0
    # Each open loop (latency at half the maximum rate) runs this long.
    latency_s: float = 3.0
    # Prepared work per closed loop: at most this many items and this many batches.
    item_budget: int = 150_000
    max_batches: int = 15_000
    scaling_size: int = 1000
    # Closed loops per row, the fastest kept: other processes on a small shared machine
    # only ever slow a loop down, and they do so for every contender alike.
    repeats: int = 2
    quick: bool = False

    def __post_init__(self) -> None:
        named = {self.ratio_size, self.latency_size, self.scaling_size, *self.gateway_sizes}
        if not named <= set(self.sizes):
            raise ValueError(f"sizes {sorted(named - set(self.sizes))} are judged but not "
                             f"measured")


QUICK = Plan(sizes=(1, 10, 100, 500), ratio_size=100, latency_size=10, gateway_sizes=(1, 10),
             max_s=0.5, latency_s=0.5, item_budget=2_000, max_batches=200, scaling_size=100,
             repeats=1, quick=True)
