"""The worker's request, reply and retry queues are quorum queues, so that a cluster keeps
each of them when a node dies; a retry queue hands its messages back to the request queue
after its delay, at least once; queues an earlier version declared as classic ones are
kept, and the channel still works.
"""

from __future__ import annotations

import asyncio

import aio_pika
from structlog.testing import capture_logs

from tests.support.reliability_support import broker_channel
from tests.support.services import SERVICES, amqp_url
from worker.amqp.topology import (
    DEAD_QUEUE,
    REPLY_QUEUE,
    REQUEST_QUEUE,
    declare_topology,
    retry_queue_name,
)

DELAYS_S = [0.2, 1.0]


def queue_types(vhost: str) -> dict[str, tuple[str, dict[str, object]]]:
    """Queue -> (type, declared arguments)."""
    return {queue.name: (queue.type, queue.arguments) for queue in SERVICES.broker.queues(vhost)}


async def test_the_request_reply_and_retry_queues_are_quorum_queues(vhost: str) -> None:
    async with broker_channel(vhost) as channel:
        await declare_topology(channel, DELAYS_S)
        await declare_topology(channel, DELAYS_S)  # again: the same arguments, accepted
    queues = queue_types(vhost)
    names = [REQUEST_QUEUE, REPLY_QUEUE, *map(retry_queue_name, DELAYS_S)]
    assert {name: queues[name][0] for name in names} == dict.fromkeys(names, "quorum")
    # Declared classic explicitly, as the `dlq` commands need it.
    assert queues[DEAD_QUEUE] == ("classic", {"x-queue-type": "classic"})
    # Whatever the broker takes off the request queue (over its delivery limit) is
    # dead-lettered to vbapi.dead, at least once.
    assert queues[REQUEST_QUEUE][1] == {
        "x-queue-type": "quorum", "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": DEAD_QUEUE, "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish"}
    retry_args = queues[retry_queue_name(0.2)][1]
    assert retry_args["x-dead-letter-strategy"] == "at-least-once"
    assert retry_args["x-overflow"] == "reject-publish"
    assert retry_args["x-message-ttl"] == 200


async def test_a_retry_queue_hands_messages_back_after_its_delay(vhost: str) -> None:
    async with await aio_pika.connect(amqp_url(vhost)) as connection:
        channel = await connection.channel()
        await declare_topology(channel, DELAYS_S)
        await channel.default_exchange.publish(  # confirmed: the channel's default
            aio_pika.Message(b"again", message_id="m1"), routing_key=retry_queue_name(0.2))
        requests = await channel.declare_queue(REQUEST_QUEUE, passive=True)
        for _ in range(100):
            message = await requests.get(no_ack=True, fail=False)
            if message is not None:
                break
            await asyncio.sleep(0.05)
        assert message is not None and message.body == b"again"
        assert message.message_id == "m1"


async def test_classic_queues_of_an_earlier_version_are_kept(vhost: str) -> None:
    """As the worker declared them before: replies and one retry queue."""
    async with broker_channel(vhost) as channel:
        await channel.declare_queue(REPLY_QUEUE, durable=True)
        await channel.declare_queue(retry_queue_name(0.2), durable=True, arguments={
            "x-message-ttl": 200, "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": REQUEST_QUEUE})
    async with broker_channel(vhost) as channel:
        with capture_logs() as logs:
            topology = await declare_topology(channel, DELAYS_S)
        kept = {entry["queue"] for entry in logs if entry["log_level"] == "warning"}
        assert kept == {REPLY_QUEUE, retry_queue_name(0.2)}
        # The channel, reopened, still serves: the replies queue is still bound.
        await topology.reply_exchange.publish(aio_pika.Message(b"r"), routing_key="Any")
        replies = await channel.declare_queue(REPLY_QUEUE, passive=True)
        for _ in range(100):
            if (message := await replies.get(no_ack=True, fail=False)) is not None:
                break
            await asyncio.sleep(0.05)
        assert message is not None and message.body == b"r"
    queues = queue_types(vhost)
    assert queues[REPLY_QUEUE][0] == "classic"
    assert queues[retry_queue_name(0.2)][0] == "classic"
    assert queues[retry_queue_name(1.0)][0] == "quorum"  # new: declared as a quorum queue
