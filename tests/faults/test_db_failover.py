"""kill -9 of the PostgreSQL primary under a worker whose DSN lists the primary and its
synchronous standby (libpq's multi-host form, target_session_attrs=read-write), while a
ledger of batches streams in; then the standby is promoted, as an operator or an
orchestrator would.  The worker resumes by itself: every batch it answered is on the new
primary, none is applied twice, none is answered 500 or dead-lettered.

The figures are printed (and shown in the test's output), in seconds from the kill: the
promotion, the first commit on the new primary, the worker answering again.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from tests.support.faults.ledger import check_ledger, make_batches, replies_by_status, seeded_rng
from tests.support.faults.pg_pair import PgPair
from tests.support.faults.processes import Spawn, create_migrated
from tests.support.faults.worker_log import ANSWERED, events, replayed, seconds

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]

DATABASE = "vbapi_faults"
BATCHES, ITEMS, KEYS = 100, 200, 3000
KILL_AT = 40  # batches answered
# What an orchestrator takes to notice the primary is gone and promote the standby.
NOTICE_S = 1.0
# Long enough in total (about 10 s) to outlast the failover: a batch caught by it is
# retried through the delay queues, not answered 503.
RETRY_S = [0.3, 0.6, 1.2, 2.5, 5.0]
TRANSIENT = "batch failed transiently"


async def test_worker_resumes_on_the_promoted_standby(
        db_pair: PgPair, spawn: Spawn, broker_for, capsys: pytest.CaptureFixture[str]) -> None:
    rng = seeded_rng("db-failover")
    dsn = db_pair.failover_dsn(DATABASE)
    await create_migrated(db_pair.primary_dsn(), DATABASE, dsn)

    broker = await broker_for(RETRY_S)
    batches = make_batches(BATCHES, keys=KEYS, items=ITEMS, rng=rng)
    worker = spawn(dsn, database={"pool_max_size": 4}, amqp={"prefetch_count": 16},
                   retry={"delays_s": RETRY_S, "max_deliveries": 20})
    await broker.wait_consumers(1)
    publishing = asyncio.create_task(broker.publish_all(batches, pace_s=0.03))
    try:
        await broker.wait_answers(KILL_AT, timeout_s=60)
        killed_at = time.time()
        await asyncio.to_thread(db_pair.kill_9_primary)
        answered_at_kill = broker.answered()
        await asyncio.sleep(NOTICE_S)
        promoting_at = time.time()
        await asyncio.to_thread(db_pair.promote_standby)
        promoted_at = time.time()
        await publishing
    finally:
        publishing.cancel()

    await broker.wait_answered({b.message_id for b in batches}, timeout_s=90)
    await broker.wait_drained(timeout_s=30)
    assert worker.running(), "the worker resumed by itself"
    worker.terminate()
    assert await asyncio.to_thread(worker.wait, 30) == 0

    conn = await asyncpg.connect(db_pair.standby_dsn(DATABASE))
    try:
        assert await conn.fetchval("SELECT pg_is_in_recovery()") is False
        await check_ledger(conn, batches, broker.replies)  # every batch, once, on the new one
        first_commit = await conn.fetchval(
            "SELECT extract(epoch FROM min(processed_at))::float8 "
            "FROM vbapi.upsert_processed_message WHERE processed_at > to_timestamp($1)",
            killed_at)
    finally:
        await conn.close()
    assert replies_by_status(broker.replies) == {207: BATCHES}
    assert not await broker.dead_letters(), "nothing dead-lettered"
    # Answers committed on the new primary: to deliveries received after the kill (a
    # batch the kill caught comes again from a retry queue), not from the record.
    new_answers = [line.at for line in events(worker.log, ANSWERED, after=killed_at)
                   if line.received_at > killed_at and not line.fields.get("replayed")]
    figures = {
        "answered_before_the_kill": answered_at_kill,
        "promote_started_s": seconds(promoting_at, killed_at),
        "promoted_s": seconds(promoted_at, killed_at),
        "first_commit_on_new_primary_s": seconds(first_commit, killed_at),
        "worker_first_new_answer_s": seconds(min(new_answers, default=None), killed_at),
        "worker_first_new_answer_after_promote_started_s": seconds(
            min(new_answers, default=None), promoting_at),
        "transient_failures_retried": len(events(worker.log, TRANSIENT)),
        "redeliveries_answered_from_record": replayed(worker.log),
        "batches_answered_more_than_once": sum(len(c) > 1 for c in broker.replies.values()),
    }
    with capsys.disabled():
        print(f"\ndatabase failover figures: {figures}")
