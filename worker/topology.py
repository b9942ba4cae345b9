"""Exchange and queue names, and their idempotent declaration.

    producers --vbapi (topic, '#')--> vbapi.requests (quorum) --> worker
    worker --default exchange--> reply_to queue
    worker --vbapi.replies (topic, '#')--> vbapi.replies          (no reply_to)
    worker --default exchange--> vbapi.retry.<delay> --TTL, dead-letter--> vbapi.requests
    worker --default exchange--> vbapi.dead                        (outcome: dead-lettered)
"""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

REQUEST_EXCHANGE = "vbapi"
REQUEST_QUEUE = "vbapi.requests"
REPLY_EXCHANGE = "vbapi.replies"
REPLY_QUEUE = "vbapi.replies"
DEAD_QUEUE = "vbapi.dead"
RETRY_QUEUE_PREFIX = "vbapi.retry."


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
    # A quorum queue, for its x-delivery-count header: the worker counts deliveries of a
    # message that keeps crashing it, and dead-letters it after retry.max_deliveries.
    requests = await channel.declare_queue(
        REQUEST_QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
    await requests.bind(request_exchange, routing_key="#")
    reply_exchange = await channel.declare_exchange(
        REPLY_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    replies = await channel.declare_queue(REPLY_QUEUE, durable=True)
    await replies.bind(reply_exchange, routing_key="#")
    await channel.declare_queue(DEAD_QUEUE, durable=True)
    for delay_s in retry_delays_s:
        # Messages wait out the TTL here, then the broker dead-letters them back to the
        # request queue: a pending retry survives a restart of the worker.
        await channel.declare_queue(retry_queue_name(delay_s), durable=True, arguments={
            "x-message-ttl": int(delay_s * 1000),
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": REQUEST_QUEUE,
        })
    return Topology(requests, request_exchange, reply_exchange)
