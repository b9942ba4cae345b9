"""SIGKILL of the worker, several times, while batches stream in: nothing lost, nothing
applied twice, every redelivery answered as the first time."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.support.faults.ledger import check_ledger, grouped_commits, make_batches, seeded_rng
from tests.support.faults.processes import Spawn

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

RETRY_S = [0.2, 0.5, 1.0]
SMALL_POOL = {"pool_max_size": 2}


async def test_sigkill_several_times_mid_stream(spawn: Spawn, broker_for, dsn: str,
                                                db: asyncpg.Connection) -> None:
    rng = seeded_rng("sigkill")
    broker = await broker_for(RETRY_S)
    batches = make_batches(240, keys=60, items=25, rng=rng)
    # Every kill redelivers what was in flight; it must not count as poison here.  More
    # batches in flight than connections: the kills also land on group commits.
    worker = spawn(dsn, database=SMALL_POOL, amqp={"prefetch_count": 16},
                   retry={"delays_s": RETRY_S, "max_deliveries": 20})
    publishing = asyncio.create_task(broker.publish_all(batches, pace_s=0.005))

    kills = 0
    for fraction in sorted(rng.uniform(0.1, 0.8) for _ in range(3)):
        await broker.wait_answers(int(fraction * len(batches)), timeout_s=40)
        # A random moment inside the stream: between commit, reply and ack of some batch.
        await asyncio.sleep(rng.uniform(0, 0.05))
        worker.kill()
        kills += 1
        worker.start()
    await publishing

    await broker.wait_answered({b.message_id for b in batches}, timeout_s=60)
    await broker.wait_drained()
    worker.terminate()
    assert worker.wait(30) == 0
    assert kills == 3
    await check_ledger(db, batches, broker.replies)
    repeated = sum(len(c) > 1 for c in broker.replies.values())
    print(f"batches answered more than once (redelivered after a kill): {repeated}; "
          f"batches committed in groups: {await grouped_commits(db)}")


async def test_committed_batch_redelivered_past_the_poison_limit(
        spawn: Spawn, broker_for, dsn: str, db: asyncpg.Connection) -> None:
    """A worker that dies between commit and ack, again and again (say, next to a batch that
    really is poison), leaves a committed batch with a high delivery count.  It must still
    be answered with its recorded reply, not refused as poison and dead-lettered."""
    rng = seeded_rng("sigkill-poison-limit")
    broker = await broker_for(RETRY_S)
    [batch] = make_batches(1, keys=5, items=5, rng=rng)
    max_deliveries = 3
    sections = {"retry": {"delays_s": RETRY_S, "max_deliveries": max_deliveries}}
    worker = spawn(dsn, **sections)
    await broker.publish(batch)
    await broker.wait_answered({batch.message_id}, timeout_s=30)
    worker.terminate()
    assert worker.wait(30) == 0

    # The same delivery again, as if its ack had been lost, through as many dead consumers
    # as the poison limit allows and one more.
    await broker.publish(batch)
    assert await broker.bounce(max_deliveries) > max_deliveries
    worker.start()
    await broker.wait_answers(1, timeout_s=30)
    await wait_for_copies(broker, batch.message_id, 2)
    await broker.wait_drained()
    worker.terminate()
    assert worker.wait(30) == 0
    await check_ledger(db, [batch], broker.replies)
    assert not await broker.dead_letters()


async def wait_for_copies(broker, message_id: str, count: int, timeout_s: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while len(broker.replies.get(message_id, [])) < count:
        assert loop.time() < deadline, f"fewer than {count} replies to {message_id}"
        await asyncio.sleep(0.05)
