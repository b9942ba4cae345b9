"""The tests' producers, both the client library with a private reply queue: one that
waits for the reply to each batch, one that keeps every reply it gets (to count them)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage

from tests.support.waiting import wait_until
from worker.amqp.topology import REQUEST_EXCHANGE
from worker.client import Reply as ClientReply
from worker.client import UpsertClient


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
