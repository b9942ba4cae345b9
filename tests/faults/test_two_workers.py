"""Two workers at once on a small, overlapping key set: every batch applied exactly once in
timestamp order whichever worker takes it, no lock conflict left unanswered.

Some batches are also published twice (a producer retrying after a lost confirm), so the
two workers can process copies of one message_id at the same time: one commits, the other
must roll back and answer with the first one's reply.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from tests.support.faults.ledger import check_ledger, grouped_commits, make_batches, seeded_rng
from tests.support.faults.processes import Spawn

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

RETRY_S = [0.2, 0.5, 1.0, 2.0]


async def test_two_workers_on_overlapping_keys(spawn: Spawn, broker_for, dsn: str,
                                               db: asyncpg.Connection) -> None:
    rng = seeded_rng("two-workers")
    broker = await broker_for(RETRY_S)
    batches = make_batches(300, keys=12, items=8, rng=rng)
    # More batches in flight than connections, so that each worker also commits groups of
    # batches in one transaction: two groups hold their keys in no common order.
    sections: dict[str, Any] = {"retry": {"delays_s": RETRY_S, "max_deliveries": 20},
                                "amqp": {"prefetch_count": 16},
                                "database": {"pool_max_size": 2}}
    workers = [spawn(dsn, **sections), spawn(dsn, **sections)]
    await broker.wait_consumers(2)

    # Every batch once, plus a second copy of about one in eight published right after it.
    stream = []
    for batch in batches:
        stream.append(batch)
        if rng.random() < 0.125:
            stream.append(batch)
    await broker.publish_all(stream)

    await broker.wait_answered({b.message_id for b in batches}, timeout_s=60)
    await broker.wait_drained()
    for worker in workers:
        assert worker.running()
        worker.terminate()
    for worker in workers:
        assert await asyncio.to_thread(worker.wait, 30) == 0
    await check_ledger(db, batches, broker.replies)
    twice = len(stream) - len(batches)
    copies = sum(len(c) for c in broker.replies.values()) - len(batches)
    assert copies >= twice, "each copy of a batch published twice is answered"
    logs = [w.log.read_text() for w in workers]
    assert all('"batch answered"' in log for log in logs), "both workers took batches"
    print(f"batches committed in groups: {await grouped_commits(db)}")
