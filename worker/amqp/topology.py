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

vbapi.dead is declared a classic queue explicitly, by the worker and the `dlq` commands
alike: they hold the whole queue and rely on a classic queue putting requeued messages back
in place, and on a quorum queue every hold would count as a delivery of every dead letter
(RabbitMQ 4.x drops a message past its delivery limit, 20 by default).  A vhost whose
default queue type is quorum (deploy/k8s) would otherwise make it a quorum queue.  While it
is unavailable, a dead letter is handed back to the request queue until it is available.

vbapi.requests dead-letters to vbapi.dead (at least once): whatever the broker itself takes
off it, a message over the quorum queue's delivery limit above all, lands there instead of
being dropped.

Queues an earlier version declared as classic ones (or with other arguments) are kept as
they are, with a warning: the broker cannot change a queue's type, and refuses to declare
a queue again with other arguments (PRECONDITION_FAILED).  Moving them to quorum queues is
an operator's step: delete each while it is empty, and a worker declares it again.  A
vbapi.requests of an earlier version, without the dead-letter target, gets it from the
policy :data:`DEAD_LETTER_POLICY` instead (docs/deployment.md, "Broker versions").
"""

from __future__ import annotations

import json
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue
from aiormq.exceptions import ChannelNotFoundEntity, ChannelPreconditionFailed

from worker.logs import get_logger

log = get_logger("worker.amqp.topology")

REQUEST_EXCHANGE = "vbapi"
REQUEST_QUEUE = "vbapi.requests"
REPLY_EXCHANGE = "vbapi.replies"
REPLY_QUEUE = "vbapi.replies"
DEAD_QUEUE = "vbapi.dead"
RETRY_QUEUE_PREFIX = "vbapi.retry."

QUORUM: dict[str, Any] = {"x-queue-type": "quorum"}
CLASSIC: dict[str, Any] = {"x-queue-type": "classic"}
# A retry queue hands each message back to vbapi.requests when its TTL runs out.  A quorum
# queue dead-letters at most once by default: a message expiring while the request queue
# elects a leader would be dropped.  At least once keeps it until the request queue has it;
# the broker accepts that only with overflow reject-publish (RabbitMQ >= 3.10).
RETRY_ARGUMENTS: dict[str, Any] = {**QUORUM, "x-dead-letter-strategy": "at-least-once",
                                   "x-overflow": "reject-publish"}
# What the broker takes off the request queue (a message over the delivery limit that
# RabbitMQ 4.x quorum queues have by default, 20) goes to vbapi.dead, at least once for the
# same reason as above.
REQUEST_ARGUMENTS: dict[str, Any] = {**QUORUM, "x-dead-letter-exchange": "",
                                     "x-dead-letter-routing-key": DEAD_QUEUE,
                                     "x-dead-letter-strategy": "at-least-once",
                                     "x-overflow": "reject-publish"}
# The same as a policy, for a vbapi.requests declared by an earlier version without them
# (a queue's arguments cannot change).  docs/deployment.md gives the rabbitmqctl command.
DEAD_LETTER_POLICY: dict[str, Any] = {
    key.removeprefix("x-"): value for key, value in REQUEST_ARGUMENTS.items()
    if key != "x-queue-type"}


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
    requests = await _declare_kept(channel, REQUEST_QUEUE, REQUEST_ARGUMENTS, advice=(
        "without a dead-letter target, a message over the broker's delivery limit is "
        f"dropped: apply the policy {json.dumps(DEAD_LETTER_POLICY)} to it "
        "(docs/deployment.md, Broker versions)"))
    if requests is None:
        raise RuntimeError(f"queue {REQUEST_QUEUE} unavailable")
    await requests.bind(request_exchange, routing_key="#")
    reply_exchange = await channel.declare_exchange(
        REPLY_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    replies = await _declare_kept(channel, REPLY_QUEUE, QUORUM)
    if replies is not None:
        await replies.bind(reply_exchange, routing_key="#")
    await declare_dead_queue(channel)
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


async def declare_dead_queue(channel: AbstractChannel) -> AbstractQueue | None:
    """vbapi.dead, a classic queue whatever the vhost's default type (the `dlq` commands
    declare it too).  One that exists as another type is kept, with a warning."""
    return await _declare_kept(channel, DEAD_QUEUE, CLASSIC, advice=(
        "the dlq commands need a classic queue: move its dead letters away, delete it "
        "and let a worker declare it again (docs/deployment.md, Broker versions)"))


async def _declare_kept(channel: AbstractChannel, name: str, arguments: dict[str, Any],
                        advice: str | None = None) -> AbstractQueue | None:
    """Declare the queue; one that exists with other arguments (a classic queue of an
    earlier version) is used as it is, and one that cannot be reached now (a classic
    queue whose node is down) is left out: both with a warning, and on the channel
    reopened (the broker closes a channel on either error), rather than stop the worker.
    Only that queue's messages are at stake then (the request queue's caller stops the
    worker when it is None).  ``advice`` tells the operator what to do about a kept one."""
    for passive in (False, True):
        try:
            return await channel.declare_queue(name, durable=True, passive=passive,
                                               arguments=None if passive else arguments)
        except ChannelPreconditionFailed as e:  # not for a passive declaration
            await channel.reopen()
            log.warning("queue exists with other arguments; keeping it as it is",
                        queue=name, error=str(e), **({"advice": advice} if advice else {}))
        except ChannelNotFoundEntity as e:
            await channel.reopen()
            log.warning("queue unavailable (a classic queue on a node that is down?)",
                        queue=name, error=str(e))
            return None
    return None
