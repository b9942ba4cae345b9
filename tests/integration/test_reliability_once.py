"""Issue 3, item 5: a redelivered batch whose writes committed writes nothing and gets the
identical reply; processed message ids expire after the retention, off the hot path."""

from __future__ import annotations

import asyncpg
import pytest

from tests.support import samples
from tests.support.producer import Producer
from tests.support.reliability_support import lock_waiters, prepare
from tests.support.running import running
from tests.support.services import amqp_url
from tests.support.waiting import wait_until
from worker.settings import Settings
from worker.store import expiry, writer
from worker.store.statements import PROCESSED_LOOKUP


async def test_a_message_id_belongs_to_its_producer(
        vhost: str, settings: Settings, producer_user: tuple[str, str],
        db: asyncpg.Connection) -> None:
    """Issue 18, item 1: a second producer's batch with an id the first one used is its
    own batch: applied, and answered with its own reply, never the first one's (which
    would disclose the other producer's data and silently drop its own batch)."""
    user, password = producer_user
    async with running(settings), Producer(amqp_url(vhost)) as guest, \
            Producer(amqp_url(vhost, user, password)) as acme:
        first = await guest.call(samples.BENEFIT_PATH, [samples.benefit("GUEST-1")],
                                 message_id="shared-id", user_id="guest")
        other = await acme.call(samples.BENEFIT_PATH,
                                [samples.benefit("ACME-1"), samples.benefit("ACME-2")],
                                message_id="shared-id", user_id=user)
        # The same producer again (a retry): the identical recorded reply, nothing written.
        again = await acme.call(samples.BENEFIT_PATH,
                                [samples.benefit("ACME-1"), samples.benefit("ACME-2")],
                                message_id="shared-id", user_id=user)
        too_long = await acme.call(samples.BENEFIT_PATH, [samples.benefit("ACME-3")],
                                   message_id="m" * 255, user_id=user)

    assert [d["id"][0]["value"] for d in first.body["data"]] == ["GUEST-1"]
    assert [(d["id"][0]["value"], d["status"]) for d in other.body["data"]] == \
        [("ACME-1", 201), ("ACME-2", 201)]
    assert again.properties.body == other.properties.body
    assert too_long.body["data"][0]["status"] == 201  # the longest id AMQP carries is fine
    stored = {r[0] for r in await db.fetch("SELECT benefit_code FROM vbapi.benefit")}
    assert stored == {"GUEST-1", "ACME-1", "ACME-2", "ACME-3"}
    records = await db.fetch("SELECT producer, message_id, path, activity_id "
                             "FROM vbapi.upsert_processed_message "
                             "WHERE message_id = 'shared-id' ORDER BY producer")
    assert [tuple(r)[:3] for r in records] == [
        (user, "shared-id", samples.BENEFIT_PATH), ("guest", "shared-id", samples.BENEFIT_PATH)]
    assert [r["activity_id"] for r in records] == [other.body["debug"]["activityID"],
                                                   first.body["debug"]["activityID"]]


async def row_version(db: asyncpg.Connection) -> list[tuple[str, str]]:
    """Each row's key and xmin: a row written again gets a new xmin."""
    return [tuple(r) for r in await db.fetch(  # type: ignore[misc]
        "SELECT benefit_code, xmin::text FROM vbapi.benefit ORDER BY benefit_code")]


async def test_redelivery_writes_nothing_and_answers_identically(
        settings: Settings, producer: Producer, db: asyncpg.Connection) -> None:
    items = [samples.benefit("B1"), samples.benefit("B2", pend_Flag="**")]
    # Two transactions of small batches at a time, so that the racing pair below is in
    # flight at once (with the default of one, the second waits its turn, then finds the
    # record: the same answer, and no race to see).
    racing_pool = settings.databases["demo"].model_copy(update={"group_connections": 2})
    settings = settings.model_copy(update={"databases": {"demo": racing_pool}})
    async with running(settings):
        first = await producer.call(samples.BENEFIT_PATH, items, message_id="m-1",
                                    correlation_id="c-1")
        written = await row_version(db)
        again = await producer.call(samples.BENEFIT_PATH, items, message_id="m-1",
                                    correlation_id="c-2")
        assert await row_version(db) == written

        # Two deliveries of one message at the same time: both held on the row lock of
        # B1 until both are in flight, then let go together.
        async with db.transaction():
            await db.execute("SELECT 1 FROM vbapi.benefit WHERE benefit_code = 'B1' "
                             "FOR UPDATE")
            sent = [await producer.send(samples.BENEFIT_PATH,
                                        [samples.benefit("B1", pend_Flag="Y")],
                                        message_id="m-2", correlation_id=f"c-race-{i}")
                    for i in range(2)]
            await wait_until(lambda: _at_least(lock_waiters(db), 2), timeout_s=20)
        racing = [await producer.reply(c) for c in sent]

    assert [d["status"] for d in first.body["data"]] == [201, 400]
    assert again.properties.body == first.properties.body
    assert again.headers["activity-id"] == first.headers["activity-id"] \
        == first.body["debug"]["activityID"]
    assert again.properties.correlation_id == "c-2"
    assert [code for code, _ in written] == ["B1"]
    # The racing pair: one committed; the other found the message id taken when it came
    # to record it, rolled back and answered from the record.
    assert racing[0].properties.body == racing[1].properties.body
    assert racing[0].body["data"][0]["status"] == 200
    rows = await db.fetch("SELECT pend_flag, upsert_message_id FROM vbapi.benefit")
    assert [tuple(r) for r in rows] == [("Y", "m-2")]
    recorded = await db.fetch("SELECT message_id, status, reply FROM "
                              "vbapi.upsert_processed_message ORDER BY message_id")
    assert [(r["message_id"], r["status"]) for r in recorded] == [("m-1", 207), ("m-2", 207)]
    assert bytes(recorded[0]["reply"]) == first.properties.body


async def _at_least(count: object, n: int) -> bool:
    return await count >= n  # type: ignore[misc,operator]


async def test_a_large_reply_is_recorded_compressed_with_lz4_where_the_server_has_it(
        settings: Settings, producer: Producer, db: asyncpg.Connection) -> None:
    try:
        await db.execute("SET default_toast_compression = 'lz4'")
    except asyncpg.PostgresError:
        pytest.skip("this PostgreSQL has no lz4")
    items = [samples.benefit(f"B{i}") for i in range(300)]  # a reply of some 25 kB
    async with running(settings):
        reply = await producer.call(samples.BENEFIT_PATH, items, message_id="m-large")
    row = await db.fetchrow("SELECT reply, pg_column_compression(reply) AS method "
                            "FROM vbapi.upsert_processed_message WHERE message_id = 'm-large'")
    assert row["method"] == "lz4"
    assert bytes(row["reply"]) == reply.properties.body


async def test_a_batch_without_message_id_is_written_each_time(
        dsn: str, db: asyncpg.Connection) -> None:
    """No id, no record: such a batch has no exactly-once protection.  (aio-pika gives
    every message an id; producers on other clients may send none.)"""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        for pend_flag in ("A", "B"):
            batch = prepare(samples.BENEFIT_PATH, [samples.benefit("B9", pend_Flag=pend_flag)])
            stored = await writer.commit_batch(pool, batch)
            assert not stored.replayed
    finally:
        await pool.close()
    assert await db.fetchval("SELECT pend_flag FROM vbapi.benefit") == "B"
    assert await db.fetchval("SELECT count(*) FROM vbapi.upsert_processed_message") == 0


async def test_expiry_forgets_only_old_ids_in_chunks(dsn: str, db: asyncpg.Connection,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    await db.execute("""
        INSERT INTO vbapi.upsert_processed_message (message_id, status, reply, processed_at)
        SELECT 'old-' || i, 207, '\\x7b7d'::bytea, now() - interval '8 days' - i * interval '1 s'
        FROM generate_series(1, 12000) AS i;
        INSERT INTO vbapi.upsert_processed_message (message_id, status, reply, processed_at)
        SELECT 'new-' || i, 207, '\\x7b7d'::bytea, now() - interval '6 days'
        FROM generate_series(1, 3000) AS i;
        ANALYZE vbapi.upsert_processed_message;
    """)
    # The hot path looks a message id up by the primary key, never by a scan.
    plan = "\n".join(r[0] for r in await db.fetch(f"EXPLAIN {PROCESSED_LOOKUP}", "", "new-1"))
    assert "upsert_processed_message_pkey" in plan and "Seq Scan" not in plan

    monkeypatch.setattr(expiry, "EXPIRE_CHUNK_ROWS", 5000)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        assert await expiry.expire_processed(pool, 7) == 12000
        assert await expiry.expire_processed(pool, 7) == 0
    finally:
        await pool.close()
    left = await db.fetchval("SELECT count(*) FROM vbapi.upsert_processed_message "
                             "WHERE message_id LIKE 'new-%'")
    assert left == 3000
    assert await db.fetchval("SELECT count(*) FROM vbapi.upsert_processed_message") == 3000


async def test_worker_expires_processed_ids_periodically(
        settings: Settings, producer: Producer, db: asyncpg.Connection) -> None:
    # Retention 0.5 s (in days), checked every 0.2 s.
    settings.worker.processed_retention_days = 0.5 / 86400
    settings.worker.processed_cleanup_interval_s = 0.2
    async with running(settings):
        await producer.call(samples.BENEFIT_PATH, [samples.benefit("B1")], message_id="gone")
        assert await db.fetchval("SELECT count(*) FROM vbapi.upsert_processed_message") == 1

        async def forgotten() -> bool:
            return await db.fetchval(
                "SELECT count(*) FROM vbapi.upsert_processed_message") == 0
        await wait_until(forgotten, timeout_s=10)


HOSTILE_IDS = ["x'); DROP TABLE vbapi.benefit; --", "back\\slash\\'", "$$ dollar $q$", "é ünï ☃ 𝄞",
               "E'\\x27'", "semi;colon"]


async def test_hostile_message_ids_are_recorded_as_sent_and_answer_redeliveries(
        settings: Settings, producer: Producer, db: asyncpg.Connection) -> None:
    """A message_id that tries to end an SQL literal is recorded exactly as sent, and
    answers its redelivery from the record."""
    async with running(settings):
        first = [await producer.call(samples.BENEFIT_PATH, [samples.benefit(f"H{i}")],
                                     message_id=message_id)
                 for i, message_id in enumerate(HOSTILE_IDS)]
        again = [await producer.call(samples.BENEFIT_PATH, [samples.benefit(f"H{i}")],
                                     message_id=message_id)
                 for i, message_id in enumerate(HOSTILE_IDS)]
    assert [r.body["data"][0]["status"] for r in first] == [201] * len(HOSTILE_IDS)
    assert [r.properties.body for r in again] == [r.properties.body for r in first]
    recorded = {r[0] for r in await db.fetch(
        "SELECT message_id FROM vbapi.upsert_processed_message")}
    assert recorded == set(HOSTILE_IDS)
    assert await db.fetchval("SELECT count(*) FROM vbapi.benefit") == len(HOSTILE_IDS)
