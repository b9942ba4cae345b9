"""Exchange and queue names, and their idempotent declaration.

    producers --vbapi (topic, '#')--> vbapi.requests (quorum) --> worker
    worker --default exchange--> reply_to queue
    worker --vbapi.replies (topic, '#')--> vbapi.replies          (no reply_to)
    worker --default exchange--> vbapi.retry.<delay> --TTL, dead-letter--> vbapi.requests
    worker --default exchange--> vbapi.dead                        (outcome: dead-lettered)

The request, reply and retry queues are quorum queues: replicated on the cluster's nodes,
they stay available when one of them dies.  A classic queue lives on one node: while that
node is down it cannot be declared, published to or consumed from, so a worker failing over
to another node could not even declare its topology (tests/faults/test_cluster_failover.py).
vbapi.dead is declared without a type, as the `dlq` commands declare it: the vhost's default
type decides (quorum in deploy/k8s); while a classic one is unavailable, a dead letter is
handed back to the request queue until it is available again.

Queues an earlier version declared as classic ones (or with other arguments) are kept as
they are, with a warning: the broker cannot change a queue's type, and refuses to declare
a queue again with other arguments (PRECONDITION_FAILED).  Moving them to quorum queues is
an operator's step: delete each while it is empty, and a worker declares it again.
"""

from __future__ import annotations

from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue
from aiormq.exceptions import ChannelNotFoundEntity, ChannelPreconditionFailed

from worker.logs import get_logger

log = get_logger("worker.topology")

REQUEST_EXCHANGE = "vbapi"
REQUEST_QUEUE = "vbapi.requests"
REPLY_EXCHANGE = "vbapi.replies"
REPLY_QUEUE = "vbapi.replies"
DEAD_QUEUE = "vbapi.dead"
RETRY_QUEUE_PREFIX = "vbapi.retry."

QUORUM: dict[str, Any] = {"x-queue-type": "quorum"}
# A retry queue hands each message back to vbapi.requests when its TTL runs out.  A quorum
# queue dead-letters at most once by default: a message expiring while the request queue
# elects a leader would be dropped.  At least once keeps it until the request queue has it;
# the broker accepts that only with overflow reject-publish (RabbitMQ >= 3.10).
RETRY_ARGUMENTS: dict[str, Any] = {**QUORUM, "x-dead-letter-strategy": "at-least-once",
                                   "x-overflow": "reject-publish"}


def retry_queue_name(delay_s: float) -> str:
    return f"{RETRY_QUEUE_PREFIX}{delay_s:g}s"


def worker_queue_names(retry_delays_s: list[float]) -> list[str]:
    """Every queue the worker declares, for status reports."""
    return [REQUEST_QUEUE, REPLY_QUEUE, DEAD_QUEUE,
            *(retry_queue_name(d) for d in retry_delays_s)]


class Topology:
    """The declared exchanges and queues of one channel."""

    def __init__(self, requests: AbstractQueue, request_exchange: AbstractExchange,
                 reply_exchange: AbstractExchange) -> None:
        self.requests = requests
        self.request_exchange = request_exchange
        self.reply_exchange = reply_exchange


async def declare_topology(channel: AbstractChannel, retry_delays_s: list[float]) -> Topology:
    """Declare everything the worker uses.  Safe to run by many workers, any number of times."""
    request_exchange = await channel.declare_exchange(
        REQUEST_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    # A quorum queue also for its x-delivery-count header: the worker counts deliveries of
    # a message that keeps crashing it, and dead-letters it after retry.max_deliveries.
    requests = await channel.declare_queue(REQUEST_QUEUE, durable=True, arguments=QUORUM)
    await requests.bind(request_exchange, routing_key="#")
    reply_exchange = await channel.declare_exchange(
        REPLY_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    replies = await _declare_kept(channel, REPLY_QUEUE, QUORUM)
    if replies is not None:
        await replies.bind(reply_exchange, routing_key="#")
    await _declare_kept(channel, DEAD_QUEUE, {})
    for delay_s in retry_delays_s:
        # Messages wait out the TTL here, then the broker dead-letters them back to the
        # request queue: a pending retry survives a restart of the worker.
        await _declare_kept(channel, retry_queue_name(delay_s), {
            **RETRY_ARGUMENTS,
            "x-message-ttl": int(delay_s * 1000),
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": REQUEST_QUEUE,
        })
    return Topology(requests, request_exchange, reply_exchange)


async def _declare_kept(channel: AbstractChannel, name: str,
                        arguments: dict[str, Any]) -> AbstractQueue | None:
    """Declare the queue; one that exists with other arguments (a classic queue of an
    earlier version) is used as it is, and one that cannot be reached now (a classic
    queue whose node is down) is left out: both with a warning, and on the channel
    reopened (the broker closes a channel on either error), rather than stop the worker.
    Only that queue's messages are at stake then, not the request queue's."""
    for passive in (False, True):
        try:
            return await channel.declare_queue(name, durable=True, passive=passive,
                                               arguments=None if passive else arguments)
        except ChannelPreconditionFailed as e:  # not for a passive declaration
            await channel.reopen()
            log.warning("queue exists with other arguments; keeping it as it is",
                        queue=name, error=str(e))
        except ChannelNotFoundEntity as e:
            await channel.reopen()
            log.warning("queue unavailable (a classic queue on a node that is down?)",
                        queue=name, error=str(e))
            return None
    return None
