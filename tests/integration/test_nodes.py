"""What the worker and the client library do when the broker refuses a publish (a negative
confirm): the next publish goes on a new channel.  RabbitMQ 3.10 refuses every publish of a
channel to a quorum queue whose first publish there came while its leader was down
(tests/faults/test_cluster_failover.py); here a full queue refuses, which is simpler to make.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.abc import AbstractConnection
from aio_pika.exceptions import DeliveryError

from tests.support.services import amqp_url
from tests.support.waiting import wait_until
from vbapi_upsert_client import UpsertClient, UpsertTimeout
from worker.amqp.nodes import Publisher
from worker.amqp.topology import QUORUM, REQUEST_EXCHANGE, declare_topology
from worker.settings import Settings

# Over its limit once it holds one message: every publish after that is refused.
FULL = {**QUORUM, "x-max-length": 0, "x-overflow": "reject-publish"}


@pytest.fixture
async def connection(vhost: str) -> AsyncIterator[AbstractConnection]:
    async with await aio_pika.connect(amqp_url(vhost)) as value:
        yield value


async def refused(publish: object, attempts: int = 50) -> None:
    """Publish until the broker refuses (the queue knows it is full a moment later)."""
    with pytest.raises(DeliveryError):
        for _ in range(attempts):
            await publish()  # type: ignore[operator]


async def test_a_refused_publish_renews_the_publisher_channel(
        connection: AbstractConnection) -> None:
    setup = await connection.channel()
    await setup.declare_queue("full", durable=True, arguments=FULL)
    accepting = await setup.declare_queue("accepting", durable=True, arguments=QUORUM)
    channel = await connection.channel(publisher_confirms=True)
    publisher = Publisher(channel, renew_interval_s=60)
    exchange = publisher.watch(channel.default_exchange)
    first = await channel.get_underlay_channel()

    await refused(lambda: exchange.publish(aio_pika.Message(b"x"), routing_key="full"))
    await wait_until(lambda: publisher.renewals == 1)
    assert first.is_closed and await channel.get_underlay_channel() is not first
    # Refused again on the new channel, within the interval: no other channel.
    with pytest.raises(DeliveryError):
        await exchange.publish(aio_pika.Message(b"x"), routing_key="full")
    # The exchange handed out before publishes on the new channel.
    await exchange.publish(aio_pika.Message(b"y"), routing_key="accepting")
    assert publisher.renewals == 1
    assert (await accepting.get(no_ack=True)).body == b"y"


async def test_the_client_sends_on_a_new_channel_after_a_refusal(
        vhost: str, settings: Settings, connection: AbstractConnection) -> None:
    setup = await connection.channel()
    await declare_topology(setup, settings.retry.delays_s)
    full = await setup.declare_queue("full", durable=True, arguments=FULL)
    await full.bind(REQUEST_EXCHANGE, routing_key="Full")
    async with UpsertClient(amqp_url(vhost), database="demo", timeout_s=0.5) as client:
        first = client.channel
        await refused(lambda: client.send(None, b"[]", routing_key="Full"))
        # Confirmed and queued (no worker to answer it), on a new channel.
        with pytest.raises(UpsertTimeout):
            await client.upsert("/armor-code-ex-codes-batch", [])
        assert client.channel is not first and first.is_closed
