"""The producing side of a ledger test: batches published through the client library
until the broker confirms them, and every reply recorded as it arrives.

A publish cut off by a broker fault is sent again with the same message_id (the client's
contract: at worst the worker sees the batch twice, and answers both copies alike); such
retries are counted.  ``LedgerProducer`` is the part the shared node's TestBroker and the
cluster's producer have in common; ``ClusterProducer`` is the latter.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from tests.faults.cluster import declare_quorum_queue
from tests.faults.ledger import ENTITY, PATH, LedgerBatch, Received
from tests.support.waiting import wait_until
from worker.client import UpsertClient
from worker.core.wire import DELIVERY_COUNT_HEADER

RETRY_PAUSE_S = 0.3


class LedgerProducer:
    """Publishing with retries, and the replies by correlation id (= message_id)."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    client: UpsertClient  # made by the subclass, with ``on_reply=self._on_reply``

    def __init__(self) -> None:
        self.replies: dict[str, list[Received]] = defaultdict(list)
        self.changed = asyncio.Event()
        # Publishes sent again after a failure (a node gone under them, say).
        self.publish_retries = 0
        self.publish_errors: dict[str, int] = defaultdict(int)
        # By message_id, time.monotonic() when the publish the broker confirmed was sent,
        # and when the first reply came.
        self.sent_at: dict[str, float] = {}
        self.answered_at: dict[str, float] = {}
        # How long a publish is tried again before the test gives up on the broker.
        self.publish_deadline_s = 30.0

    def _on_reply(self, message: AbstractIncomingMessage) -> None:
        # A reply that comes again after a dropped connection is recorded twice (identical
        # but for the count a quorum queue adds when it delivers a message again).
        key = message.correlation_id or ""
        headers = {k: v for k, v in (message.headers or {}).items()
                   if k != DELIVERY_COUNT_HEADER}
        self.replies[key].append(Received(int(headers.get("status", 0)), message.body, headers))
        self.answered_at.setdefault(key, time.monotonic())
        self.changed.set()

    async def publish(self, batch: LedgerBatch) -> None:
        await self.publish_raw(batch.message_id, batch.body, ts=batch.ts)

    async def publish_raw(self, message_id: str, body: bytes, *, ts: dt.datetime,
                          headers: dict[str, Any] | None = None, **properties: Any) -> None:
        """Publish until the broker confirms it (for up to ``publish_deadline_s``), again
        with the same message_id after a failure.  ``properties`` are the client's
        (routing_key: the ledger's entity unless given)."""
        if headers is None:
            headers = {"path": PATH, "vbasoftware-database": "demo"}
        properties.setdefault("content_type", "application/json")
        properties.setdefault("routing_key", ENTITY)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.publish_deadline_s
        while True:
            sent_at = time.monotonic()
            try:
                await self.client.send(None, body, headers=dict(headers),
                                       message_id=message_id, timestamp=ts, **properties)
                self.sent_at.setdefault(message_id, sent_at)
                return
            except Exception as e:
                if loop.time() > deadline:
                    raise
                self.publish_retries += 1
                self.publish_errors[type(e).__name__] += 1
                await asyncio.sleep(RETRY_PAUSE_S)

    async def publish_all(self, batches: Sequence[LedgerBatch], pace_s: float = 0.0,
                          concurrency: int = 1) -> None:
        """Publish in order, a new one every ``pace_s`` with at most ``concurrency``
        unconfirmed, so that faults land while batches still come."""
        limit = asyncio.Semaphore(concurrency)

        async def one(batch: LedgerBatch) -> None:
            try:
                await self.publish(batch)
            finally:
                limit.release()

        async with asyncio.TaskGroup() as tasks:  # cancelled, it cancels them all
            for batch in batches:
                await limit.acquire()
                tasks.create_task(one(batch))
                if pace_s:
                    await asyncio.sleep(pace_s)

    def first_fresh_answer(self, after: float) -> float | None:
        """When the first batch published after ``after`` (time.monotonic()) was answered:
        the whole way, publish to reply, works again."""
        fresh = [self.answered_at[m] for m, at in self.sent_at.items()
                 if at > after and m in self.answered_at]
        return min(fresh, default=None)

    def unanswered(self) -> int:
        """Batches the broker confirmed that have no reply yet."""
        return len(self.sent_at.keys() - self.replies.keys())

    async def wait_unanswered(self, count: int, timeout_s: float) -> int:
        """Until at least ``count`` confirmed batches wait for their reply, or the timeout
        passed; how many wait then."""
        with contextlib.suppress(AssertionError):
            await self._wait(lambda: self.unanswered() >= count, timeout_s, str)
        return self.unanswered()

    def answered(self) -> int:
        return len(self.replies)

    async def wait_answered(self, message_ids: set[str], timeout_s: float) -> None:
        """Until every id has at least one reply; fails naming how many are missing."""
        await self._wait(lambda: len(message_ids - set(self.replies)) == 0, timeout_s,
                         lambda: f"{len(message_ids - set(self.replies))} of "
                                 f"{len(message_ids)} batches unanswered")

    async def wait_answers(self, count: int, timeout_s: float) -> None:
        """Until at least ``count`` distinct batches have been answered."""
        await self._wait(lambda: self.answered() >= count, timeout_s,
                         lambda: f"only {self.answered()} of {count} batches answered")

    async def _wait(self, done: Callable[[], bool], timeout_s: float,
                    failure: Callable[[], str]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not done():
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"{failure()} after {timeout_s} s")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), min(left, 0.5))
            except TimeoutError:
                pass


class ClusterProducer(LedgerProducer):
    """The client library with every node's URL (it fails over between them), its replies
    from a durable quorum queue of the test's own, acknowledged once recorded: a reply in
    flight when a node dies comes again, none is lost."""

    def __init__(self, urls: list[str], reply_queue: str) -> None:
        super().__init__()
        self.urls = urls
        self.reply_queue = reply_queue

    async def __aenter__(self) -> ClusterProducer:
        await declare_quorum_queue(self.urls[0], self.reply_queue)
        self.client = UpsertClient(self.urls, replies=self.reply_queue, parse_replies=False,
                                   on_reply=self._on_reply, timeout_s=10)
        await self.client.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()


async def wait_drained(queue_counts: Callable[[], dict[str, tuple[int, int]]],
                       queues: list[str], timeout_s: float) -> None:
    """Until each of ``queues`` holds nothing, ready or unacknowledged, as
    ``queue_counts()`` (blocking: run in a thread) reports them."""
    left: dict[str, tuple[int, int]] = {}

    async def drained() -> bool:
        counts = await asyncio.to_thread(queue_counts)
        left.clear()
        left.update({q: counts.get(q, (0, 0)) for q in queues
                     if counts.get(q, (0, 0)) != (0, 0)})
        return not left

    await wait_until(drained, timeout_s, 0.3, failure=lambda: f"queues not drained: {left}")
