"""kill -9 of broker nodes under a worker that lists a three-node cluster, while a ledger
of batches streams in through the client library (with confirms, failing over too): first
the node the worker is connected to, then the node that leads vbapi.requests.  Every
batch is answered, none is lost, none applied twice, and the rows are the ledger's.

Each kill lands with deliveries in flight (the worker's writes held up by a table lock
for a moment).  The figures of each failover are printed (and shown in the test's output):
how long the worker took to consume again, how many deliveries it answered from the
record, how often the producer had to publish again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple

import asyncpg
import pytest

from tests.support.faults.cluster import RabbitCluster
from tests.support.faults.ledger import LedgerBatch, check_ledger, make_batches, seeded_rng
from tests.support.faults.processes import Spawn, WorkerProcess
from tests.support.faults.rabbit_node import RabbitNode
from tests.support.faults.worker_log import (
    CONSUMING,
    CUT_OFF,
    FAILING_OVER,
    HANDED_BACK,
    RENEWED,
    events,
    first_received,
    replayed,
    seconds,
    wait_event,
)
from tests.support.producer import ClusterProducer, wait_drained
from worker.amqp.topology import DEAD_QUEUE, REQUEST_QUEUE, retry_queue_name

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

TABLE = "vbapi.armor_code_ex_code"



class Victim(NamedTuple):
    """A node to kill, what it is, and whether it leads the request queue."""

    node: RabbitNode
    role: str
    leads: bool

BATCHES, ITEMS, KEYS = 300, 200, 5000
# Two parts, a kill in each, landing once this many batches are answered: the part is still
# being published, and the worker has deliveries in flight.
FIRST_PART, KILL_AT = 150, (40, 190)
PACE_S = 0.015
CONCURRENCY = 16
PREFETCH = 16
# Before each kill the worker's writes are held up by a lock on the table for a moment, so
# that the kill lands with a prefetch's worth of deliveries in flight: written once the
# lock goes, but acknowledged on a channel that died with its node, or not.
IN_FLIGHT = PREFETCH + 8
RETRY_S = [0.2, 0.5, 1.0, 2.0]


async def test_worker_rides_out_kill_9_of_its_node_and_of_the_queue_leader(
        broker_cluster: RabbitCluster, spawn: Spawn, dsn: str, db: asyncpg.Connection,
        capsys: pytest.CaptureFixture[str]) -> None:
    cluster = broker_cluster
    rng = seeded_rng("cluster-failover")
    batches = make_batches(BATCHES, keys=KEYS, items=ITEMS, rng=rng)
    worker = spawn(dsn, amqp={"url": cluster.urls(), "prefetch_count": PREFETCH},
                   retry={"delays_s": RETRY_S, "max_deliveries": 20})
    await wait_event(worker.log, CONSUMING, after=0, timeout_s=60)
    reply_queue = f"faults.replies.{uuid.uuid4().hex[:8]}"
    kills: list[dict[str, Any]] = []
    async with ClusterProducer(cluster.urls(), reply_queue) as producer:

        async def part(batches: list[LedgerBatch], kill_at: int, pick: Callable[[], Victim],
                       ) -> None:
            victim = pick()  # asks the cluster (seconds): before, not at the moment to kill
            publishing = asyncio.create_task(producer.publish_all(batches, PACE_S,
                                                                  CONCURRENCY))
            try:
                await producer.wait_answers(kill_at, timeout_s=60)
                async with table_locked(dsn):
                    unanswered = await producer.wait_unanswered(IN_FLIGHT, timeout_s=10)
                    figures = await kill_9(cluster, victim, worker)
                figures["unanswered_at_kill"] = unanswered
                kills.append(await recover(cluster, figures, victim, worker, reply_queue))
                await publishing
            finally:
                publishing.cancel()

        def the_workers() -> Victim:
            node = worker_node(cluster, worker)
            return Victim(node, "the worker's node", cluster.leader(REQUEST_QUEUE) is node)

        def the_leader() -> Victim:
            leader = cluster.leader(REQUEST_QUEUE)
            mine = leader is worker_node(cluster, worker)
            return Victim(leader, "the request queue's leader" + " (the worker's too)" * mine,
                          True)

        await part(batches[:FIRST_PART], KILL_AT[0], the_workers)
        await part(batches[FIRST_PART:], KILL_AT[1], the_leader)
        await producer.wait_answered({b.message_id for b in batches}, timeout_s=90)
        queues = [REQUEST_QUEUE, *(retry_queue_name(d) for d in RETRY_S)]
        await wait_drained(cluster.queue_counts, queues, timeout_s=30)
        dead = (await asyncio.to_thread(cluster.queue_counts)).get(DEAD_QUEUE, (0, 0))

    worker.terminate()
    assert await asyncio.to_thread(worker.wait, 30) == 0
    await check_ledger(db, batches, producer.replies)
    assert dead == (0, 0), f"dead letters: {dead}"
    for kill in kills:
        # When the worker received its first delivery after the kill, and when the
        # producer got the reply to a batch published after it (the whole way works).
        killed_at, killed_mono = kill.pop("at")
        first = first_received(worker.log, killed_at)
        kill["first_delivery_received_s"] = seconds(first and first.received_at, killed_at)
        kill["first_fresh_batch_answered_s"] = seconds(
            producer.first_fresh_answer(killed_mono), killed_mono)
    figures = {
        "kills": kills,
        "worker_failovers": len(events(worker.log, FAILING_OVER)),
        "worker_publish_channels_renewed": len(events(worker.log, RENEWED)),
        # Deliveries the kills caught: cancelled with their channel, or written but not
        # answered (the reply's channel gone); the broker redelivers both.
        "deliveries_cut_off": len(events(worker.log, CUT_OFF)),
        "deliveries_handed_back": len(events(worker.log, HANDED_BACK)),
        "redeliveries_answered_from_record": replayed(worker.log),
        "batches_answered_more_than_once": sum(len(c) > 1 for c in producer.replies.values()),
        "producer_publish_retries": producer.publish_retries,
        "producer_publish_errors": dict(producer.publish_errors),
        "producer_failovers": producer.client.failovers,
    }
    with capsys.disabled():
        print(f"\ncluster failover figures: {figures}")
    assert figures["worker_failovers"] >= 1


def worker_node(cluster: RabbitCluster, worker: WorkerProcess) -> RabbitNode:
    """The node the worker consumes from now (its last "consuming" line)."""
    return cluster.node_at(events(worker.log, CONSUMING)[-1].fields["node"])


@contextlib.asynccontextmanager
async def table_locked(dsn: str) -> AsyncIterator[None]:
    """The ledger's table locked against writes for the block (the worker's wait)."""
    locker = await asyncpg.connect(dsn)
    try:
        await locker.execute(f"BEGIN; LOCK TABLE {TABLE} IN EXCLUSIVE MODE")
        yield
    finally:
        await locker.close()  # and with it the lock


async def kill_9(cluster: RabbitCluster, victim: Victim, worker: WorkerProcess,
                 ) -> dict[str, Any]:
    """SIGKILL the node; the figures of that failover so far."""
    workers = worker_node(cluster, worker) is victim.node
    killed_at, killed_mono = time.time(), time.monotonic()
    await asyncio.to_thread(cluster.kill_9, victim.node)
    return {"killed": victim.role, "node": victim.node.short_name, "worker_on_it": workers,
            "at": (killed_at, killed_mono)}


async def recover(cluster: RabbitCluster, figures: dict[str, Any], victim: Victim,
                  worker: WorkerProcess, reply_queue: str) -> dict[str, Any]:
    """Wait for the worker to consume again (from another node, if it was its own) and for
    a new leader of the request queue, then restart the node and wait for the cluster to be
    whole again.  Returns the figures of that failover."""
    node = victim.node
    killed_at = figures["at"][0]
    if figures["worker_on_it"]:
        again = await wait_event(worker.log, CONSUMING, after=killed_at, timeout_s=60)
        figures["worker_consuming_again_s"] = round(again.at - killed_at, 2)
        figures["worker_now_on"] = cluster.node_at(again.fields["node"]).short_name
    if victim.leads:
        new = await asyncio.to_thread(cluster.wait_new_leader, REQUEST_QUEUE, node)
        figures["new_leader_by_s"] = round(time.time() - killed_at, 2)
        figures["new_leader"] = new.short_name
    restarted = time.monotonic()
    await asyncio.to_thread(cluster.restart, node)
    await asyncio.to_thread(cluster.wait_healthy, 90.0, (REQUEST_QUEUE, reply_queue))
    figures["restart_and_rejoin_s"] = round(time.monotonic() - restarted, 2)
    return figures
