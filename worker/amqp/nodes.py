"""The broker's nodes: connect to the first that answers, and fail over to another.

A cluster's nodes are listed in ``amqp.url``; a connection goes to the first that answers,
in list order.  When that connection is lost, the next try starts with the node after it,
so a dead node is not the first one tried again.  The connections are plain (not aio-pika's
robust ones): whoever uses one builds its channels and consumers on it and, once it is
lost, builds them again on the next.  That is what restores consumers after a failover,
and what keeps a publish or an ack from being sent on a channel that died with its node:
it fails at once instead, and the broker redelivers what was not acknowledged.

A channel on which the broker refused a publish (a negative confirm) is replaced before the
next one: RabbitMQ 3.10 refuses, for as long as the channel lives, every publish of a
channel to a quorum queue whose first publish there came while the queue's leader was down
(seen in tests/faults/test_cluster_failover.py); a new channel publishes again.  Later
releases try every member of the queue and recover by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast
from urllib.parse import urlsplit

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from aio_pika.exceptions import DeliveryError

from worker.logs import get_logger

log = get_logger("worker.amqp.nodes")


async def connect_first(urls: Sequence[str], *, timeout_s: float,
                        connection_name: str) -> AbstractConnection:
    """A connection to the first of ``urls`` that answers (for a command's one connection:
    it does not fail over, it fails)."""
    return await Nodes(urls, timeout_s=timeout_s, connection_name=connection_name).connect()


def node_name(url: str) -> str:
    """host:port of a node's URL, without credentials: what logs and metrics show."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5672}"


class NoNodeAnswers(ConnectionError):
    """No node of the list accepted a connection."""


class Nodes:
    """The broker's nodes, and which one a connection goes to next."""

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
        node after the one whose connection was lost; raises NoNodeAnswers."""
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
        raise NoNodeAnswers("no broker node answers: " + "; ".join(failures))

    def lost(self) -> None:
        """The current connection was lost: counted and logged, and the next connect starts
        with the next node."""
        self.failovers += 1
        log.warning("broker connection lost; failing over", node=self.current_name)
        if self.current is not None:
            self._next = (self.current + 1) % len(self.urls)

    async def reconnect(self, stopped: asyncio.Event,
                        interval_s: float) -> AbstractConnection | None:
        """A connection to a node that answers, trying them all in turn, ``interval_s``
        apart, until one does; None once ``stopped`` is set."""
        while not stopped.is_set():
            try:
                return await self.connect()
            except NoNodeAnswers as e:
                log.warning("no broker node answers; trying again", error=str(e))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), interval_s)
        return None


class Link:
    """A connection to the nodes that is made again, to the next node that answers, as soon
    as it is lost: in the background, so that a consumer on it (replies to a named queue)
    comes back even when nothing is being sent.  ``on_connect`` builds the channels and
    consumers of each new connection.  Each failover is logged and counted."""

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
                    log.warning("could not use the new broker connection", error=repr(e))
                    await asyncio.sleep(self.retry_interval_s)
                    continue
                log.info("broker connection made again", node=self.nodes.current_name)
                return
        finally:
            self._reconnecting = None


class Publisher:
    """A channel to publish on (with confirms), apart from the one a consumer is on, and
    opened again when the broker refused a publish on it: at most once every
    ``renew_interval_s``, so that refusals for another reason (a classic queue on a node
    that is down refuses too) cost a few channels a second, not one a publish."""

    def __init__(self, channel: AbstractChannel, *, renew_interval_s: float = 0.5) -> None:
        self.channel = channel
        self.renew_interval_s = renew_interval_s
        self.renewals = 0
        self._renewed_at = -renew_interval_s
        self._renewing: asyncio.Task[None] | None = None

    def watch(self, exchange: AbstractExchange) -> AbstractExchange:
        """``exchange`` (an exchange of this channel), its refused publishes reported."""
        return cast(AbstractExchange, _Watched(exchange, self._refused))

    def _refused(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._renewing is not None or now - self._renewed_at < self.renew_interval_s:
            return
        self._renewed_at = now
        self._renewing = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        log.warning("the broker refused a publish; publishing on a new channel")
        try:
            with contextlib.suppress(Exception):
                await self.channel.close()
            # The same channel object: the exchanges handed out publish on the new one.
            await self.channel.reopen()
            self.renewals += 1
        except Exception as e:  # the connection is going too: the owner fails over
            log.warning("could not open a new channel", error=repr(e))
        finally:
            self._renewing = None


class _Watched:
    """An exchange whose publishes the broker refuses call ``on_refused`` (and still
    raise); everything else is the exchange's."""

    def __init__(self, exchange: AbstractExchange, on_refused: Callable[[], None]) -> None:
        self._exchange = exchange
        self._on_refused = on_refused

    async def publish(self, message: aio_pika.abc.AbstractMessage, routing_key: str,
                      **options: Any) -> Any:
        try:
            return await self._exchange.publish(message, routing_key, **options)
        except DeliveryError:
            self._on_refused()
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._exchange, name)
