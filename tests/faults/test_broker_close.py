"""The broker closes every connection of the vhost mid-stream, twice: the worker's, and
the test's own publisher and reply consumer too.

To be sure the close lands on deliveries in flight (rabbitmqctl takes about a second to
act), the test holds a lock on the table while it closes: the worker's in-flight batches
wait in their upsert when their channel dies.  aiormq cancels the consumer tasks of a
closed channel, so those transactions roll back; the broker redelivers the batches once
the worker has reconnected, and each must be applied exactly once.  A batch that did
commit before its reply or ack could go out is answered from the processed-message
record on redelivery, identically.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.support.faults.ledger import check_ledger, make_batches, seeded_rng
from tests.support.faults.processes import Spawn
from tests.support.reliability_support import lock_waiters
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

RETRY_S = [0.2, 0.5, 1.0]


async def test_broker_closes_all_connections_mid_stream(spawn: Spawn, broker_for, dsn: str,
                                                        db: asyncpg.Connection) -> None:
    rng = seeded_rng("broker-close")
    broker = await broker_for(RETRY_S)
    batches = make_batches(300, keys=50, items=25, rng=rng)
    # Two transactions of small batches at a time (the default is one), so that the close
    # lands on two of them waiting in their upsert.
    worker = spawn(dsn, retry={"delays_s": RETRY_S, "max_deliveries": 20},
                   database={"group_connections": 2})
    await broker.wait_consumers(1)
    publishing = asyncio.create_task(broker.publish_all(batches, pace_s=0.005))

    for n in range(2):
        await broker.wait_answers(broker.answered() + rng.randrange(10, 40), timeout_s=40)
        locker = await asyncpg.connect(dsn)
        try:
            async with locker.transaction():
                await locker.execute("LOCK TABLE vbapi.armor_code_ex_code IN EXCLUSIVE MODE")
                await wait_until(lambda: _wait_for_waiters(db), timeout_s=20)
                await asyncio.to_thread(broker.close_all_connections, f"fault test: close {n}")
        finally:
            await locker.close()
        assert broker.answered() < len(batches), "the close must land mid-stream"
        # Back to consuming (the worker reconnects by itself) before the next close.
        await broker.wait_consumers(1, timeout_s=30)
    await publishing

    await broker.wait_answered({b.message_id for b in batches}, timeout_s=60)
    await broker.wait_drained()
    assert worker.running(), "the worker must survive the broker dropping its connection"
    worker.terminate()
    assert worker.wait(30) == 0
    await check_ledger(db, batches, broker.replies)
    replayed = sum('"replayed":true' in line for line in worker.log.read_text().splitlines())
    print(f"redeliveries answered from the processed-message record: {replayed}")

async def _wait_for_waiters(db: asyncpg.Connection) -> bool:
    return await lock_waiters(db) >= 2
