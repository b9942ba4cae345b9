"""The broker's nodes, as the client sees them: connect to the first that answers, and fail
over to another when that connection is lost.

The client's own copy of what the worker does (worker/amqp/nodes.py), logging to the
standard library's logger ``vbapi_upsert_client``.  A connection goes to the first node
that answers, in list order; once it is lost, the next try starts with the node after it,
so a dead node is not the first one tried again.  Connections are plain (not aio-pika's
robust ones): the client builds its channel and reply consumer on each new connection, so
that nothing is sent on a channel that died with its node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

import aio_pika
from aio_pika.abc import AbstractConnection

from vbapi_upsert_client.errors import BrokerUnreachable

log = logging.getLogger("vbapi_upsert_client")


def node_name(url: str) -> str:
    """host:port of a node's URL, without credentials: what the log shows."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5672}"


class Nodes:
    """The broker's nodes, and which one a connection goes to next.

    The worker subclasses it (worker/amqp/nodes.py) to raise its own error and log its own
    way: ``unreachable`` and the two ``_say_*`` hooks are what differ."""

    # Raised when no node answers.
    unreachable: type[Exception] = BrokerUnreachable

    def __init__(self, urls: Sequence[str], *, timeout_s: float, connection_name: str) -> None:
        if not urls:
            raise ValueError("at least one broker URL is needed")
        self.urls = list(urls)
        self.timeout_s = timeout_s
        self.connection_name = connection_name
        self._next = 0
        # The node of the connection made last (index into urls).
        self.current: int | None = None
        # Connections lost, each followed by a new one (to the same node or another).
        self.failovers = 0

    @property
    def current_name(self) -> str | None:
        return None if self.current is None else node_name(self.urls[self.current])

    async def connect(self) -> AbstractConnection:
        """A connection to the first node that answers, trying each once, starting with the
        node after the one whose connection was lost; raises ``unreachable``."""
        failures = []
        for step in range(len(self.urls)):
            index = (self._next + step) % len(self.urls)
            url = self.urls[index]
            try:
                connection = await aio_pika.connect(
                    url, timeout=self.timeout_s,
                    client_properties={"connection_name": self.connection_name})
            except Exception as e:
                failures.append(f"{node_name(url)}: {type(e).__name__}: {e}")
                continue
            self.current = index
            return connection
        raise self.unreachable("no broker node answers: " + "; ".join(failures))

    def lost(self) -> None:
        """The current connection was lost: counted and logged, and the next connect starts
        with the next node."""
        self.failovers += 1
        self._say_lost()
        if self.current is not None:
            self._next = (self.current + 1) % len(self.urls)

    async def reconnect(self, stopped: asyncio.Event,
                        interval_s: float) -> AbstractConnection | None:
        """A connection to a node that answers, trying them all in turn, ``interval_s``
        apart, until one does; None once ``stopped`` is set."""
        while not stopped.is_set():
            try:
                return await self.connect()
            except self.unreachable as e:
                self._say_retrying(e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), interval_s)
        return None


    def _say_lost(self) -> None:
        log.warning("broker connection lost; failing over (node %s)", self.current_name)

    def _say_retrying(self, error: Exception) -> None:
        log.warning("%s; trying again", error)


class Link:
    """A connection to the nodes that is made again, to the next node that answers, as soon
    as it is lost: in the background, so that a consumer on it (replies to a named queue)
    comes back even when nothing is being sent.  ``on_connect`` builds the channels and
    consumers of each new connection."""

    def __init__(self, nodes: Nodes, on_connect: Callable[[AbstractConnection], Awaitable[None]],
                 *, retry_interval_s: float = 1.0) -> None:
        self.nodes = nodes
        self.on_connect = on_connect
        self.retry_interval_s = retry_interval_s
        self.connection: AbstractConnection | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()

    @property
    def failovers(self) -> int:
        return self.nodes.failovers

    async def open(self) -> AbstractConnection:
        connection = await self.nodes.connect()
        await self._use(connection)
        return connection

    async def ready(self) -> AbstractConnection:
        """The connection, once one is up again if it was lost."""
        if self._reconnecting is not None:
            await asyncio.shield(self._reconnecting)
        assert self.connection is not None
        return self.connection

    async def close(self) -> None:
        self._closed.set()
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        if self.connection is not None:
            await self.connection.close()

    async def _use(self, connection: AbstractConnection) -> None:
        try:
            await self.on_connect(connection)
        except BaseException:
            with contextlib.suppress(Exception):
                await connection.close()
            raise
        self.connection = connection
        connection.close_callbacks.add(self._on_close)

    def _on_close(self, connection: object, *_: object) -> None:
        if (self._closed.is_set() or connection is not self.connection
                or self._reconnecting is not None):
            return
        self.nodes.lost()
        self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        try:
            while True:
                connection = await self.nodes.reconnect(self._closed, self.retry_interval_s)
                if connection is None:
                    return
                try:
                    await self._use(connection)
                except Exception as e:  # lost again while its channels were being built
                    log.warning("could not use the new broker connection: %r", e)
                    await asyncio.sleep(self.retry_interval_s)
                    continue
                log.info("broker connection made again (node %s)", self.nodes.current_name)
                return
        finally:
            self._reconnecting = None
