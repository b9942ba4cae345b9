"""PostgreSQL restarted mid-stream, on a private server of the test's own (the machine's
shared server is never touched): a fast restart while transactions wait on a lock, then a
crash (immediate stop) and an outage of a couple of seconds.  Batches caught by either are
retried through the delay queues and applied exactly once; none is dead-lettered."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.support.faults.ledger import check_ledger, make_batches, seeded_rng
from tests.support.faults.processes import PrivatePostgres, Spawn, create_migrated, private_postgres
from tests.support.reliability_support import lock_waiters
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(150)]

# Long enough in total (about 10 s) to outlast the outage: the contract's 503 is for a
# database that stays down, which this test is not about.
RETRY_S = [0.3, 0.6, 1.2, 2.5, 5.0]
DATABASE = "vbapi_faults"


async def _hold_lock_and(server: PrivatePostgres, action: str) -> None:
    """Lock the table so that the worker has transactions open, then stop the server
    under them: ``restart`` (fast) or ``crash`` (immediate stop, 2 s down, start)."""
    dsn = server.dsn(DATABASE)
    locker = await asyncpg.connect(dsn)
    watcher = await asyncpg.connect(dsn)
    try:
        await locker.execute("BEGIN; LOCK TABLE vbapi.armor_code_ex_code IN EXCLUSIVE MODE")

        async def some_blocked() -> bool:
            return await lock_waiters(watcher) >= 2
        await wait_until(some_blocked, timeout_s=20)
    finally:
        await watcher.close()
    if action == "restart":
        await asyncio.to_thread(server.restart, "fast")
    else:
        await asyncio.to_thread(server.stop, "immediate")
        await asyncio.sleep(2.0)
        await asyncio.to_thread(server.start)
    locker.terminate()


async def test_postgres_restarted_mid_stream(spawn: Spawn, broker_for) -> None:
    rng = seeded_rng("postgres-restart")
    with private_postgres() as server:
        dsn = server.dsn(DATABASE)
        await create_migrated(server.dsn(), DATABASE, dsn)

        broker = await broker_for(RETRY_S)
        batches = make_batches(240, keys=50, items=20, rng=rng)
        # Two transactions of small batches at a time (the default is one): the restart
        # lands on both, blocked.
        worker = spawn(dsn, database={"pool_max_size": 2, "group_connections": 2},
                       amqp={"prefetch_count": 16},
                       retry={"delays_s": RETRY_S, "max_deliveries": 20})
        await broker.wait_consumers(1)
        publishing = asyncio.create_task(broker.publish_all(batches, pace_s=0.01))

        for action in ("restart", "crash"):
            await broker.wait_answers(broker.answered() + rng.randrange(20, 50), timeout_s=40)
            await _hold_lock_and(server, action)
            assert broker.answered() < len(batches), "the restart must land mid-stream"
        await publishing

        await broker.wait_answered({b.message_id for b in batches}, timeout_s=60)
        await broker.wait_drained(timeout_s=30)
        assert worker.running()
        worker.terminate()
        assert await asyncio.to_thread(worker.wait, 30) == 0

        conn = await asyncpg.connect(dsn)
        try:
            await check_ledger(conn, batches, broker.replies)
        finally:
            await conn.close()
        log = worker.log.read_text()
        assert '"batch failed transiently"' in log, "the restarts must have hit batches"
        assert not await broker.dead_letters(), "nothing dead-lettered"
