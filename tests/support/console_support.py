"""Helpers of the console's tests: its settings, the console served in the test's event
loop, and dead letters put straight into ``vbapi.dead``."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import aio_pika
import orjson
import uvicorn

from tests.support.operations_support import STAMP, dead_headers, wait_dead_count
from tests.support.samples import benefit
from tests.support.services import free_port
from worker.amqp.topology import CLASSIC, DEAD_QUEUE
from worker.console.app import build_app, sampling
from worker.console.context import Console
from worker.settings import ConsoleSettings, Settings

OPERATOR, KEY = "alice", "alice-console-key-0123456789"
SESSION_KEY = "console-session-key-never-shown"


def digest(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def console_settings(settings: Settings, **console: Any) -> Settings:
    """``settings`` with a console: the operator alice, a fixed session key, quick sampling."""
    values: dict[str, Any] = {"operators": {OPERATOR: digest(KEY)},
                              "session_key": SESSION_KEY, "workers": [],
                              "sample_interval_s": 0.5, **console}
    return settings.model_copy(update={"console": ConsoleSettings(**values)})


@contextlib.asynccontextmanager
async def serving_console(settings: Settings) -> AsyncIterator[tuple[str, Console]]:
    """The console on a port of its own in this event loop: its base URL, and its state."""
    console = Console(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_app(console), host="127.0.0.1", port=port,
                                           log_config=None, lifespan="off"))
    async with sampling(console):
        task = asyncio.create_task(server.serve())
        try:
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
            yield f"http://127.0.0.1:{port}", console
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 30)


async def put_dead(url: str, count: int, status_of: Callable[[int], int] = lambda n: 404,
                   database: str = "demo", **headers: Any) -> None:
    """``count`` dead letters of one benefit each for ``database``, as the worker would
    have dead-lettered them; ``headers`` added to (or replacing) each one's."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(DEAD_QUEUE, durable=True, arguments=CLASSIC)
        for n in range(count):
            await channel.default_exchange.publish(aio_pika.Message(
                body=orjson.dumps([benefit(f"C{n}"), benefit(f"D{n}")]),
                content_type="application/json",
                headers={**dead_headers(n, status_of(n), database), **headers},
                message_id=f"msg-{n:05d}", correlation_id=f"cor-{n:05d}",
                timestamp=STAMP, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=DEAD_QUEUE)
    await wait_dead_count(url, count)
