"""Several broker addresses: the worker and the client library connect to the first node
that answers and fail over when their connection is lost, counting each failover.

On the machine's one broker node a "failover" is a reconnection to the same node after
the broker closed the connection; a node that does not answer is a closed local port.
The cluster itself (kill -9 of real nodes) is tested in tests/faults/.
"""

from __future__ import annotations

import asyncio
import hashlib

import aio_pika
import pytest
from prometheus_client import REGISTRY

from tests.support import samples
from tests.support.configs import make_settings
from tests.support.producer import Producer
from tests.support.running import running
from tests.support.services import amqp_url, close_connections
from tests.support.waiting import wait_until
from vbapi_upsert_client import ReplyLost, UpsertClient
from vbapi_upsert_client.nodes import node_name
from worker.amqp.nodes import Nodes, NoNodeAnswers
from worker.amqp.topology import declare_topology
from worker.settings import AmqpSettings

# A port nothing listens on: a node that is down.
DEAD_NODE = "amqp://guest:guest@127.0.0.1:1/"


def failovers() -> float:
    return REGISTRY.get_sample_value("upsert_broker_failovers_total") or 0.0


def test_a_list_of_urls_is_a_cluster_and_the_signing_key_ignores_its_order() -> None:
    one = AmqpSettings(url="amqp://a:b@n1/")
    assert one.urls == ["amqp://a:b@n1/"]
    # Unset, the key is no longer derived from the URL, its password included.
    assert one.signing_key_bytes() != hashlib.sha256(
        b"vbapi-upsert-worker:amqp://a:b@n1/").digest()
    forward = AmqpSettings(url=["amqp://a:b@n1/", "amqp://a:b@n2/"])
    backward = AmqpSettings(url=["amqp://a:b@n2/", "amqp://a:b@n1/"])
    assert forward.urls == ["amqp://a:b@n1/", "amqp://a:b@n2/"]
    assert forward.signing_key_bytes() == backward.signing_key_bytes()
    with pytest.raises(ValueError, match="at least one broker URL"):
        AmqpSettings(url=[])
    assert node_name("amqp://user:secret@rabbit-2:5673/vh") == "rabbit-2:5673"


async def test_nodes_take_the_first_that_answers_and_start_after_a_lost_one(vhost: str) -> None:
    live = amqp_url(vhost)
    nodes = Nodes([DEAD_NODE, live], timeout_s=5, connection_name="test")
    connection = await nodes.connect()
    assert nodes.current == 1
    await connection.close()
    nodes.lost()  # the next try starts after node 1: at node 0, which is dead, then 1
    connection = await nodes.connect()
    assert nodes.current == 1
    await connection.close()
    with pytest.raises(NoNodeAnswers, match=r"127\.0\.0\.1:1\b"):
        await Nodes([DEAD_NODE], timeout_s=5, connection_name="test").connect()


async def test_the_worker_fails_over_and_consumes_again(vhost: str, dsn: str,
                                                        producer: Producer) -> None:
    settings = make_settings(vhost, {"demo": {"dsn": dsn}},
                             amqp={"url": [DEAD_NODE, amqp_url(vhost)],
                                   "reconnect_interval_s": 0.2})
    async with running(settings) as worker:
        before = await producer.call(samples.ARMOR_PATH, [samples.armor(1)])
        counted = failovers()
        assert close_connections(vhost, "vbapi-upsert-worker", "test: the node is gone") == 1
        await wait_until(lambda: failovers() == counted + 1, timeout_s=15)
        await wait_until(lambda: worker.consuming, timeout_s=15)
        after = await producer.call(samples.ARMOR_PATH, [samples.armor(2)])
    assert before.body["data"][0]["status"] == 201
    assert after.body["data"][0]["status"] == 201


async def test_the_client_fails_over_and_a_reply_lost_with_its_connection_is_said(
        vhost: str, dsn: str) -> None:
    settings = make_settings(vhost, {"demo": {"dsn": dsn}})
    connection = await aio_pika.connect(amqp_url(vhost))
    async with connection:  # the queues a worker would declare, so the batch waits in one
        await declare_topology(await connection.channel(), settings.retry.delays_s)
    async with UpsertClient([DEAD_NODE, amqp_url(vhost)], database="demo",
                            timeout_s=30) as client:
        # No worker yet: the batch is confirmed and queued, its reply pending.
        pending = await client.send(samples.ARMOR_PATH, [samples.armor(1)], message_id="m-1")
        assert close_connections(vhost, "vbapi-upsert-client", "test: the node is gone") == 1
        with pytest.raises(ReplyLost, match="m-1") as lost:
            await asyncio.wait_for(pending, 15)
        assert lost.value.message_id == "m-1"
        await wait_until(lambda: client.failovers == 1, timeout_s=15)
        async with running(settings):
            # Published again with the same message id, as ReplyLost says: answered once.
            again = await client.upsert(samples.ARMOR_PATH, [samples.armor(1)],
                                        message_id="m-1")
    assert again.status == 207
    assert [item.status for item in again.items] == [201]
