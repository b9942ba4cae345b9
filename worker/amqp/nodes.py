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
from collections.abc import Callable, Sequence
from typing import Any, cast

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from aio_pika.exceptions import DeliveryError
from aiormq import spec

from vbapi_upsert_client import nodes as client_nodes
from worker.core.errors import OperatorError
from worker.logs import get_logger

log = get_logger("worker.amqp.nodes")


async def connect_first(urls: Sequence[str], *, timeout_s: float,
                        connection_name: str) -> AbstractConnection:
    """A connection to the first of ``urls`` that answers (for a command's one connection:
    it does not fail over, it fails)."""
    return await Nodes(urls, timeout_s=timeout_s, connection_name=connection_name).connect()


class NoNodeAnswers(OperatorError, ConnectionError):
    """No node of the list accepted a connection."""


class Nodes(client_nodes.Nodes):
    """The broker's nodes, and which one a connection goes to next: the client library's
    choice of node, with the worker's error and log lines (the worker counts a failover in
    upsert_broker_failovers_total)."""

    unreachable = NoNodeAnswers

    def _say_lost(self) -> None:
        log.warning("broker connection lost; failing over", node=self.current_name)

    def _say_retrying(self, error: Exception) -> None:
        log.warning("no broker node answers; trying again", error=str(error))


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

    def watch(self, exchange: AbstractExchange) -> WatchedExchange:
        """``exchange`` (an exchange of this channel), its refused publishes reported."""
        return WatchedExchange(exchange, self.channel, self._refused)

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


class WatchedExchange:
    """An exchange whose publishes the broker refuses call ``on_refused`` (and still
    raise)."""

    def __init__(self, exchange: AbstractExchange, channel: AbstractChannel,
                 on_refused: Callable[[], None]) -> None:
        self._exchange = exchange
        self._channel = channel  # the exchange's, opened again in place when renewed
        self._on_refused = on_refused

    async def publish(self, message: aio_pika.abc.AbstractMessage, routing_key: str,
                      **options: Any) -> Any:
        """aio-pika's publish of ``message``, confirmed."""
        try:
            return await self._exchange.publish(message, routing_key, **options)
        except DeliveryError:
            self._on_refused()
            raise

    async def publish_body(self, body: bytes, properties: spec.Basic.Properties, routing_key: str,
                           *, timeout: float) -> None:
        """``body`` with ``properties``, confirmed: the same publish on the same channel,
        without aio-pika's message object, whose making cost a reply a few percent of a
        small batch's CPU (issue 21).  Never mandatory: a reply nobody waits for any more
        is dropped, as with ``publish(..., mandatory=False)``."""
        # aiormq's Channel, as the abstract one does not declare ``wait``.
        channel = cast(aiormq.Channel, await self._channel.get_underlay_channel())
        try:
            # wait=False: not held until aiormq's writer has written the frames, since the
            # broker's confirm, awaited here, comes only after they arrived.
            await channel.basic_publish(body, exchange=self._exchange.name,
                                        routing_key=routing_key, properties=properties,
                                        mandatory=False, timeout=timeout, wait=False)
        except DeliveryError:
            self._on_refused()
            raise
