"""Load generation: a closed loop for the maximum rate, an open loop for latency at a fixed
rate, and the producer that publishes batches and times each one until its reply."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import aio_pika

from bench.cpu import CpuSplit
from bench.data import PATH, ROUTING_KEY
from vbapi_upsert_client import UpsertClient
from worker.amqp.topology import declare_topology
from worker.settings import RetrySettings

T = TypeVar("T")


@dataclass
class Run:
    """What one loop measured."""

    batches: int
    elapsed_s: float
    latencies_s: list[float] = field(default_factory=list)
    # CPU per item by process group over the loop, where it was measured.
    cpu: CpuSplit | None = None

    def per_s(self, count: int) -> float:
        return count / self.elapsed_s if self.elapsed_s > 0 else 0.0


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


class Loops(Generic[T]):
    """Drives ``call`` over prepared work items."""

    def __init__(self, call: Callable[[T], Awaitable[None]]) -> None:
        self.call = call

    async def closed(self, work: Sequence[T], window: int, max_s: float) -> Run:
        """``window`` calls always in flight until the work or the time runs out: the
        maximum rate the system under test sustains."""
        position = 0
        done = 0
        started = time.perf_counter()
        deadline = started + max_s

        async def lane() -> None:
            nonlocal position, done
            while position < len(work) and time.perf_counter() < deadline:
                piece = work[position]
                position += 1
                await self.call(piece)
                done += 1

        await asyncio.gather(*(lane() for _ in range(min(window, len(work)))))
        return Run(done, time.perf_counter() - started)

    async def open(self, work: Sequence[T], rate_per_s: float, max_s: float) -> Run:
        """Calls started on a fixed schedule whatever the replies do (so queueing shows up
        as latency), each timed from its start to its completion."""
        count = max(1, min(len(work), int(rate_per_s * max_s)))
        latencies: list[float] = []
        started = time.perf_counter()

        async def one(index: int) -> None:
            delay = started + index / rate_per_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            t0 = time.perf_counter()
            await self.call(work[index])
            latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(one(i) for i in range(count)))
        return Run(count, time.perf_counter() - started, latencies)


class Producer:
    """Publishes batches to ``vbapi`` as a producer would and waits for each reply: the
    client library (confirmed, persistent publishes; direct reply-to), counting statuses."""

    def __init__(self, url: str, database: str = "bench", timeout_s: float = 120.0, *,
                 path: str = PATH, routing_key: str = ROUTING_KEY) -> None:
        self.url = url
        self.path = path
        self.routing_key = routing_key
        self.client = UpsertClient(url, database=database, timeout_s=timeout_s,
                                   gzip_min_bytes=2**62,  # every contender: plain JSON
                                   parse_replies=False)   # as the peers' replies differ
        self.statuses: dict[int, int] = {}
        self.last_reply: bytes = b""

    async def __aenter__(self) -> Producer:
        # The topology first, so that the naive peer finds the exchange and queue too.
        connection = await aio_pika.connect(self.url)
        async with connection:
            await declare_topology(await connection.channel(), RetrySettings().delays_s)
        await self.client.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()

    async def call(self, body: bytes) -> None:
        """Publish one batch (persistent, confirmed) and wait for its reply."""
        reply = await self.client.upsert(self.path, body, routing_key=self.routing_key)
        self.statuses[reply.status] = self.statuses.get(reply.status, 0) + 1
        self.last_reply = reply.body

    def reset(self) -> None:
        self.statuses = {}
