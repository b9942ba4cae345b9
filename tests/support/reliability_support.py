"""Helpers of the reliability tests: batches prepared without a broker, a connection that
counts the statements it sends, a TCP proxy that plays a database going away and coming
back, and a look at queues, dead letters and sessions waiting on a lock."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import asyncpg
import orjson

from schemas.registry import default_registry
from tests.support.services import amqp_url, free_port
from worker.amqp.topology import DEAD_QUEUE
from worker.core.batch import Plan
from worker.core.intake import IntakeRules, prepare_batch
from worker.core.request import Request
from worker.settings import Settings


def prepare(path: str, items: Any, *, message_id: str | None = None,
            timestamp: dt.datetime | None = None) -> Plan:
    """A validated batch for the database ``demo``, as the worker would make it."""
    settings = Settings(databases={"demo": {"dsn": "postgresql://127.0.0.1/unused"}},
                        metrics={"port": 0})
    request = Request(body=orjson.dumps(items),
                      headers={"path": path, "vbasoftware-database": "demo"},
                      message_id=message_id, timestamp=timestamp)
    return prepare_batch(request, IntakeRules.of(settings), default_registry(),
                         dt.datetime.now(dt.UTC))


def _recording(method: Any) -> Any:
    """An asyncpg ``Connection`` method that first remembers the statement's text."""

    async def recorded(self: CountingConnection, query: str, *args: Any, **kwargs: Any) -> Any:
        self.sent.append(query)
        return await method(self, query, *args, **kwargs)

    return recorded


class CountingConnection(asyncpg.Connection):  # type: ignore[misc]
    """A real asyncpg connection that remembers the text of every statement it sends
    (asyncpg's transactions send SAVEPOINT, RELEASE and ROLLBACK TO through execute)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[str] = []

    execute = _recording(asyncpg.Connection.execute)
    fetch = _recording(asyncpg.Connection.fetch)
    fetchrow = _recording(asyncpg.Connection.fetchrow)
    fetchval = _recording(asyncpg.Connection.fetchval)


class TcpProxy:
    """127.0.0.1:<port> -> upstream.  ``stop`` refuses new connections and cuts the open
    ones (what clients see when a database restarts); ``start`` serves again, same port."""

    def __init__(self, upstream_port: int, port: int | None = None) -> None:
        self.upstream_port = upstream_port
        self.port = port or free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.accepted = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1",
                                                                 self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.transport.abort()


@contextlib.asynccontextmanager
async def broker_channel(vhost: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(amqp_url(vhost))
    async with connection:
        yield await connection.channel()


async def queue_depth(vhost: str, name: str) -> int:
    """Messages ready in a queue (passive declare: the queue must exist)."""
    async with broker_channel(vhost) as channel:
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)


async def take_dead_letters(vhost: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Everything in vbapi.dead, taken off the queue."""
    async with broker_channel(vhost) as channel:
        queue = await channel.declare_queue(DEAD_QUEUE, passive=True)
        found = []
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            found.append(message)
        return found


async def lock_waiters(db: asyncpg.Connection) -> int:
    """Sessions of ``db``'s database waiting on a lock now."""
    # Inside a transaction pg_stat_activity is a snapshot taken once: drop it first.
    await db.execute("SELECT pg_stat_clear_snapshot()")
    return int(await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock'"))
