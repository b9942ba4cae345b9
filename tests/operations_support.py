"""Helpers of the operations tests: the real CLI, a reply collector that keeps every reply
(to count them), and direct access to ``vbapi.dead``."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage

from tests.samples import benefit
from tests.waiting import wait_until
from worker import cli
from worker.client import UpsertClient
from worker.topology import DEAD_QUEUE, REQUEST_EXCHANGE

VENV_BIN = Path(sys.executable).parent


async def run_cli(args: Sequence[str], capsys: Any) -> tuple[int, str, str]:
    """The real CLI in a thread (it runs its own event loop): exit status, stdout, stderr.

    Its logging setup is skipped: it would point every logger of this test process at
    this test's captured stderr, which is closed once the test ends."""
    capsys.readouterr()
    with mock.patch.object(cli, "configure_logging", lambda settings: None):
        code = await asyncio.to_thread(cli.main, list(args))
    out, err = capsys.readouterr()
    return code, out, err


async def run_console_script(args: Sequence[str], timeout_s: float = 60
                             ) -> subprocess.CompletedProcess[str]:
    """The installed ``upsert-worker`` console script, as an operator runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPSERT_")}
    return await asyncio.to_thread(
        subprocess.run, [str(VENV_BIN / "upsert-worker"), *args], capture_output=True,
        text=True, timeout=timeout_s, env=env)


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


def status_of(message: AbstractIncomingMessage) -> int:
    return int((message.headers or {})["status"])


@contextlib.asynccontextmanager
async def channel_on(url: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(url)
    async with connection:
        yield await connection.channel(publisher_confirms=True)


async def dead_count(url: str) -> int:
    """Ready messages in vbapi.dead (declares it if need be)."""
    async with channel_on(url) as channel:
        queue = await channel.declare_queue(DEAD_QUEUE, durable=True)
        result = queue.declaration_result
        return int(result.message_count or 0)


async def wait_dead_count(url: str, count: int, timeout_s: float = 15) -> None:
    got: list[int] = []

    async def reached() -> bool:
        got.append(await dead_count(url))
        return got[-1] == count

    await wait_until(reached, timeout_s,
                     failure=lambda: f"vbapi.dead holds {got[-1]}, expected {count}")


STAMP = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def dead_headers(n: int, status: int = 404, database: str = "late") -> dict[str, Any]:
    return {"path": "/benefits-batch", "vbasoftware-database": database,
            "x-upsert-error-status": status, "x-upsert-error-title": "Not Found",
            "x-upsert-error-detail": f"database '{database}' is not configured",
            "x-upsert-activity-id": f"act-{n:05d}", "x-upsert-attempts": 1,
            "x-upsert-dead-lettered-at": "2024-05-01T12:00:00+00:00",
            "x-upsert-received-at": "2024-05-01T11:59:59+00:00", "x-delivery-count": 2}


async def put_dead_letters(url: str, count: int, status_of_n: Any = lambda n: 404) -> None:
    """Publish dead letters straight into vbapi.dead, as the worker would have."""
    conn = await aio_pika.connect(url)
    async with conn:
        # Unconfirmed publishes for speed; the count is awaited below.
        fast = await conn.channel(publisher_confirms=False)
        await fast.declare_queue(DEAD_QUEUE, durable=True)
        for n in range(count):
            await fast.default_exchange.publish(aio_pika.Message(
                body=orjson.dumps([benefit(f"B{n}")]), content_type="application/json",
                headers=dead_headers(n, status_of_n(n)), message_id=f"msg-{n:05d}",
                correlation_id=f"cor-{n:05d}", reply_to=f"reply-{n}", timestamp=STAMP,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=DEAD_QUEUE)
    await wait_dead_count(url, count)
