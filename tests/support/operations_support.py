"""Helpers of the operations tests: the real CLI, and direct access to ``vbapi.dead``."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage

from tests.support.samples import benefit
from tests.support.waiting import wait_until
from worker import cli
from worker.amqp.deadletters import DeadLetterQueue
from worker.amqp.topology import CLASSIC, DEAD_QUEUE
from worker.settings import Settings

VENV_BIN = Path(sys.executable).parent


def dead_letter_queue(settings: Settings) -> DeadLetterQueue:
    """``vbapi.dead`` as the dlq commands reach it, with these settings' sections."""
    return DeadLetterQueue(settings.amqp, settings.limits, settings.retry)


async def run_cli(args: Sequence[str], capsys: Any) -> tuple[int, str, str]:
    """The real CLI in a thread (it runs its own event loop): exit status, stdout, stderr.

    Its logging setup is skipped: it would point every logger of this test process at
    this test's captured stderr, which is closed once the test ends."""
    capsys.readouterr()
    with mock.patch.object(cli, "configure_logging", lambda *_: None):
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


def status_of(message: AbstractIncomingMessage) -> int:
    return int((message.headers or {})["status"])


@contextlib.asynccontextmanager
async def channel_on(url: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(url)
    async with connection:
        yield await connection.channel(publisher_confirms=True)


async def dead_count(url: str) -> int:
    """Ready messages in vbapi.dead (declares it if need be, as the worker does)."""
    async with channel_on(url) as channel:
        queue = await channel.declare_queue(DEAD_QUEUE, durable=True, arguments=CLASSIC)
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


async def put_dead_letters(url: str, count: int, status_of_n: Any = lambda n: 404, *,
                           database: str = "late", letter: Any = None, **headers: Any) -> None:
    """Publish dead letters straight into vbapi.dead, as the worker would have: one benefit
    each for ``database``, or the body and properties ``letter(n)`` gives (a dict of
    aio_pika.Message arguments); ``headers`` added to (or replacing) each one's."""
    def standard(n: int) -> dict[str, Any]:
        return {"body": orjson.dumps([benefit(f"B{n}")]), "reply_to": f"reply-{n}"}

    conn = await aio_pika.connect(url)
    async with conn:
        # Unconfirmed publishes for speed; the count is awaited below.
        fast = await conn.channel(publisher_confirms=False)
        await fast.declare_queue(DEAD_QUEUE, durable=True, arguments=CLASSIC)
        for n in range(count):
            await fast.default_exchange.publish(aio_pika.Message(
                content_type="application/json",
                headers={**dead_headers(n, status_of_n(n), database), **headers},
                message_id=f"msg-{n:05d}", correlation_id=f"cor-{n:05d}", timestamp=STAMP,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT, **(letter or standard)(n)),
                routing_key=DEAD_QUEUE)
    await wait_dead_count(url, count)
