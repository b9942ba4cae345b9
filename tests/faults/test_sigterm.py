"""SIGTERM under load: the worker stops taking batches, finishes the ones in flight (or,
past its grace period, hands them back), and exits 0; the next worker does the rest.

The test holds a lock on the table when it sends SIGTERM, so the signal always finds
batches in flight: once released within the grace period (they must finish), once held
past it (they must be handed back, not lost and not half done).
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from tests.support.faults.ledger import check_ledger, make_batches, seeded_rng
from tests.support.faults.processes import Spawn
from tests.support.reliability_support import lock_waiters
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

RETRY_S = [0.2, 0.5, 1.0]
GRACE_S = 3.0


async def _sigterm_with_batches_in_flight(spawn: Spawn, dsn: str, db: asyncpg.Connection,
                                          broker, *, hold_s: float) -> tuple[int, float]:
    """Start a worker, let it work, SIGTERM it while the table lock holds its batches for
    ``hold_s``; returns (exit code, seconds from SIGTERM to exit)."""
    # Two transactions of small batches at a time (the default is one): SIGTERM lands on
    # both, blocked.
    worker = spawn(dsn, retry={"delays_s": RETRY_S, "max_deliveries": 20},
                   worker={"shutdown_grace_s": GRACE_S}, database={"group_connections": 2})
    await broker.wait_consumers(1)
    await broker.wait_answers(broker.answered() + 20, timeout_s=30)
    locker = await asyncpg.connect(dsn)
    try:
        async with locker.transaction():
            await locker.execute("LOCK TABLE vbapi.armor_code_ex_code IN EXCLUSIVE MODE")

            async def some_blocked() -> bool:
                return await lock_waiters(db) >= 2
            await wait_until(some_blocked, timeout_s=20)
            worker.terminate()
            sent = time.monotonic()
            await asyncio.sleep(hold_s)
    finally:
        await locker.close()
    code = await asyncio.to_thread(worker.wait, GRACE_S + 20)
    return code, time.monotonic() - sent


async def test_sigterm_under_load(spawn: Spawn, broker_for, dsn: str,
                                  db: asyncpg.Connection) -> None:
    rng = seeded_rng("sigterm")
    broker = await broker_for(RETRY_S)
    batches = make_batches(400, keys=60, items=25, rng=rng)
    await broker.publish_all(batches)

    # In flight batches released within the grace period: they finish, then it exits.
    code, took_s = await _sigterm_with_batches_in_flight(spawn, dsn, db, broker, hold_s=0.5)
    assert code == 0
    assert took_s < GRACE_S + 5
    before = broker.answered()
    assert before < len(batches), "SIGTERM must land mid-stream"

    # Held past the grace period: handed back, and the worker still exits 0, promptly.
    code, took_s = await _sigterm_with_batches_in_flight(spawn, dsn, db, broker,
                                                         hold_s=GRACE_S + 2)
    assert code == 0
    assert took_s < GRACE_S + 10
    assert broker.answered() < len(batches), "SIGTERM must land mid-stream"

    last = spawn(dsn, retry={"delays_s": RETRY_S, "max_deliveries": 20})
    await broker.wait_answered({b.message_id for b in batches}, timeout_s=60)
    await broker.wait_drained()
    last.terminate()
    assert last.wait(30) == 0
    await check_ledger(db, batches, broker.replies)
