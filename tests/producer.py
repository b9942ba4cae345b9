"""The tests' producer: publishes batches as a producer would and collects the replies."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import aio_pika
import orjson

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
