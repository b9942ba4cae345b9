"""The tests' producers, all of them the client library.

``Producer`` waits for the reply to each batch and ``Replies`` keeps every reply it gets
(to count them), both with a private reply queue.  The fault tests' producers publish
until the broker confirms and record every reply as it arrives (below: ``LedgerProducer``,
the part the shared node's TestBroker and the cluster's producer have in common, and
``ClusterProducer``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage

from tests.support.faults.cluster import declare_quorum_queue
from tests.support.faults.ledger import ENTITY, PATH, LedgerBatch, Received
from tests.support.waiting import wait_until
from vbapi_upsert_client import Reply as ClientReply
from vbapi_upsert_client import UpsertClient
from worker.amqp.topology import REQUEST_EXCHANGE
from worker.core.wire import DELIVERY_COUNT_HEADER


@dataclass
class Reply:
    status: int
    headers: dict[str, Any]
    body: dict[str, Any]
    properties: aio_pika.abc.AbstractIncomingMessage


class Producer:
    """Publishes batches as a producer would, and collects replies: the client library with
    a private reply queue, plus what tests need to send malformed messages (no path or
    database header, raw bodies, any properties)."""

    def __init__(self, url: str) -> None:
        self.client = UpsertClient(url, replies="private", timeout_s=30,
                                   gzip_min_bytes=2**62)  # bodies go exactly as given
        self._replies: dict[str, asyncio.Future[ClientReply]] = {}

    async def __aenter__(self) -> Producer:
        await self.client.open()
        self.channel = self.client.channel
        self.exchange = self.client.exchange
        self.reply_queue = await self.channel.get_queue(self.client.reply_to, ensure=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()

    async def send(self, path: str | None, items: Any = None, *, body: bytes | None = None,
                   **properties: Any) -> str:
        """Publish one batch (``items`` as JSON, or ``body`` as it is); returns its
        correlation id.  ``properties`` are the client's: the database (``demo`` unless
        given; None: no database header), the routing key (``Benefit`` unless given), the
        message and correlation ids (a new one, and the message id, unless given), and any
        property of the message."""
        properties.setdefault("database", "demo")
        properties.setdefault("routing_key", "Benefit")
        message_id = properties.pop("message_id", None) or uuid.uuid4().hex
        correlation_id = properties.pop("correlation_id", None) or message_id
        self._replies[correlation_id] = await self.client.send(
            path, body if body is not None else orjson.dumps(items), message_id=message_id,
            correlation_id=correlation_id, **properties)
        return correlation_id

    async def reply(self, correlation_id: str, timeout_s: float = 30.0) -> Reply:
        answer = await asyncio.wait_for(self._replies[correlation_id], timeout_s)
        assert answer.message is not None
        return Reply(answer.status, answer.headers, orjson.loads(answer.body), answer.message)

    async def call(self, path: str | None, items: Any = None, **kwargs: Any) -> Reply:
        return await self.reply(await self.send(path, items, **kwargs))


class Replies:
    """The client library with a private reply queue that keeps every reply it gets, in
    arrival order (a replayed batch is answered again, on the same queue)."""

    def __init__(self, url: str) -> None:
        self.messages: list[AbstractIncomingMessage] = []
        self.client = UpsertClient(url, replies="private", on_reply=self.messages.append)

    async def __aenter__(self) -> Replies:
        await self.client.open()
        # Declared here too, so that a batch sent before any worker started is kept.
        await self.client.channel.declare_exchange(REQUEST_EXCHANGE, aio_pika.ExchangeType.TOPIC,
                                                   durable=True)
        self.queue = await self.client.channel.get_queue(self.client.reply_to, ensure=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()

    def for_id(self, correlation_id: str) -> list[AbstractIncomingMessage]:
        return [m for m in self.messages if m.correlation_id == correlation_id]

    async def wait_for(self, correlation_id: str, count: int = 1, timeout_s: float = 30
                       ) -> list[AbstractIncomingMessage]:
        await wait_until(lambda: len(self.for_id(correlation_id)) >= count, timeout_s, 0.02,
                         failure=lambda: f"{count} replies to {correlation_id} not within "
                                         f"{timeout_s} s; got {len(self.for_id(correlation_id))}")
        return self.for_id(correlation_id)

    async def send(self, path: str, items: Any, *, database: str, **properties: Any) -> str:
        """Publish a batch with reply_to = this queue; returns its message/correlation id.
        ``properties`` are the client's (user_id, timestamp, ...); the routing key is
        ``Benefit`` unless given."""
        message_id = uuid.uuid4().hex
        properties.setdefault("routing_key", "Benefit")
        await self.client.send(path, items, database=database, message_id=message_id,
                               **properties)
        return message_id


# The fault tests' producing side: batches published through the client library until the
# broker confirms them, and every reply recorded as it arrives.  A publish cut off by a
# broker fault is sent again with the same message_id (the client's contract: at worst the
# worker sees the batch twice, and answers both copies alike); such retries are counted.

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
