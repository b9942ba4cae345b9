"""The three-node RabbitMQ cluster the fault tests kill nodes of does what production's
does: three nodes running, a quorum queue with a member on each, and not one confirmed
message lost when the queue's leader dies by SIGKILL."""

from __future__ import annotations

import asyncio
import time
import uuid

import aio_pika
import aiormq
import pytest

from tests.support.faults.cluster import RabbitCluster, declare_quorum_queue
from tests.support.faults.procinfo import parent_of

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

MESSAGES = 500


def queue_name(test: str) -> str:
    return f"harness.{test}.{uuid.uuid4().hex[:8]}"


def test_cluster_forms_with_three_running_nodes(broker_cluster: RabbitCluster) -> None:
    names = {node.name for node in broker_cluster.nodes}
    assert len(names) == 3
    assert broker_cluster.running_names() == names
    # Each node is a VM of our own, on ports of its own, none of them the shared node's.
    pids = {node.beam_pid for node in broker_cluster.nodes}
    assert None not in pids and len(pids) == 3
    for node in broker_cluster.nodes:
        assert node.beam_pid is not None and node.proc is not None
        assert parent_of(node.beam_pid) == node.proc.pid
        assert not node.name.startswith("rabbit@")
    ports = [p for node in broker_cluster.nodes for p in (node.amqp_port, node.dist_port)]
    assert len(set(ports)) == 6 and not {5672, 25672} & set(ports)


async def test_quorum_queue_has_a_member_on_every_node(broker_cluster: RabbitCluster) -> None:
    queue = queue_name("members")
    first = broker_cluster.nodes[0]
    await declare_quorum_queue(first.url(), queue)
    info = broker_cluster.queue_info(queue)
    assert info["type"] == "quorum"
    names = {node.name for node in broker_cluster.nodes}
    assert set(info["members"]) == set(info["online"]) == names
    assert broker_cluster.leader(queue) is first  # the declaring client's node


async def test_confirmed_messages_survive_kill_9_of_the_leader(
        broker_cluster: RabbitCluster) -> None:
    """Declared on a (its leader), published to b with confirms, a killed, consumed from
    c: every message, once."""
    a, b, c = broker_cluster.nodes
    queue = queue_name("leader-killed")
    await declare_quorum_queue(a.url(), queue)
    assert broker_cluster.leader(queue) is a

    # A client of the node that dies: what it sees is what a worker connected there sees.
    watcher = await aio_pika.connect(a.url())
    closed: list[BaseException | None] = []
    watcher.close_callbacks.add(lambda _sender, exc: closed.append(exc))
    publisher = await aio_pika.connect(b.url())
    try:
        channel = await publisher.channel(publisher_confirms=True)
        for n in range(MESSAGES):
            # Returns once the broker confirmed it: a majority of members has it.
            await channel.default_exchange.publish(
                aio_pika.Message(str(n).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=queue)

        killed_at = time.monotonic()
        broker_cluster.kill_9(a)
        new_leader = await asyncio.to_thread(broker_cluster.wait_new_leader, queue, a)
        election_s = time.monotonic() - killed_at
        assert new_leader in (b, c)
        print(f"new leader {new_leader.name} {election_s:.2f} s after the kill")
        assert closed and isinstance(closed[0], aiormq.exceptions.AMQPConnectionError)
        assert not publisher.is_closed  # a client of another node goes on as before

        assert await drain(c.url(), queue) == [str(n) for n in range(MESSAGES)]
    finally:
        await publisher.close()
        await watcher.close()
        # The next test of the module finds three nodes again.
        await asyncio.to_thread(broker_cluster.restart, a)
        await asyncio.to_thread(broker_cluster.wait_healthy, 60.0, (queue,))
    assert set(broker_cluster.queue_info(queue)["online"]) == {n.name for n in (a, b, c)}


async def drain(url: str, queue: str) -> list[str]:
    """Every message now in the queue, taken and acknowledged, in order."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        bodies = []
        while (message := await declared.get(fail=False)) is not None:
            await message.ack()
            bodies.append(message.body.decode())
        return bodies
    finally:
        await connection.close()
