"""Issue 3, items 6 and 7: writes ordered by batch timestamp (older batches never overwrite
newer rows), rows locked in one global order, deadlocks and serialization failures
retried in place."""

from __future__ import annotations

import asyncio
import datetime as dt
import random

import asyncpg
import orjson
from prometheus_client import REGISTRY

from tests.support import samples
from tests.support.configs import make_settings
from tests.support.producer import Producer
from tests.support.reliability_support import lock_waiters, prepare
from tests.support.running import running
from tests.support.waiting import wait_until
from worker.settings import Settings
from worker.store.writer import commit_batch

T0 = dt.datetime(2024, 1, 1, 0, 0, 0, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(seconds=10)
T2 = T0 + dt.timedelta(seconds=20)
OLDER = "not applied: the stored record was written by a newer batch"


async def lineage(db: asyncpg.Connection) -> dict[str, tuple[str, dt.datetime, str]]:
    rows = await db.fetch("SELECT benefit_code, benefit_description, upsert_source_ts, "
                          "upsert_message_id FROM vbapi.benefit")
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def statuses(reply: object) -> list[tuple[int, str]]:
    return [(d["status"], d["body"]) for d in reply.body["data"]]  # type: ignore[attr-defined]


async def test_older_batches_never_overwrite_newer_rows(
        settings: Settings, producer: Producer, db: asyncpg.Connection) -> None:
    def b(code: str, text: str) -> dict[str, object]:
        return samples.benefit(code, benefit_Description=text)

    async with running(settings):
        new = await producer.call(samples.BENEFIT_PATH, [b("B1", "new")], message_id="m-new",
                                  timestamp=T1)
        old = await producer.call(samples.BENEFIT_PATH, [b("B1", "old"), b("B2", "old")],
                                  message_id="m-old", timestamp=T0)
        after_old = await lineage(db)
        same = await producer.call(samples.BENEFIT_PATH, [b("B1", "same")],
                                   message_id="m-same", timestamp=T1)
        newest = await producer.call(samples.BENEFIT_PATH, [b("B2", "newest")],
                                     message_id="m-newest", timestamp=T2)
        # `dlq replay` republishes an old batch with its original timestamp.
        replay = await producer.call(samples.BENEFIT_PATH, [b("B1", "old"), b("B2", "old")],
                                     message_id="m-old-replayed", timestamp=T0)
        # Updated and refused in one batch, nothing created.
        mixed = await producer.call(samples.BENEFIT_PATH, [b("B1", "mixed"), b("B2", "mixed")],
                                    message_id="m-mixed", timestamp=T1)

    assert statuses(new) == [(201, "Created")]
    assert statuses(old) == [(409, OLDER), (201, "Created")]
    assert after_old == {"B1": ("new", T1, "m-new"), "B2": ("old", T0, "m-old")}
    assert statuses(same) == [(200, "Updated")]   # an equal timestamp applies
    assert statuses(newest) == [(200, "Updated")]
    assert statuses(replay) == [(409, OLDER), (409, OLDER)]
    assert statuses(mixed) == [(200, "Updated"), (409, OLDER)]
    assert await lineage(db) == {"B1": ("mixed", T1, "m-mixed"), "B2": ("newest", T2, "m-newest")}


async def test_rows_are_written_in_key_order_whatever_the_item_order(
        dsn: str, db: asyncpg.Connection) -> None:
    """Fresh rows land in the heap in the order the statement wrote them, so their ctid
    order shows the order in which rows were locked."""
    keys = list(range(1, 2001))
    random.Random(3).shuffle(keys)
    batch = prepare(samples.ARMOR_PATH, [samples.armor(k) for k in keys], message_id="order")
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        await commit_batch(pool, batch)
    finally:
        await pool.close()
    written = [r[0] for r in await db.fetch(
        "SELECT armorcodeexcode_key FROM vbapi.armor_code_ex_code ORDER BY ctid")]
    assert written == sorted(keys)


def conflicts(sqlstate: str) -> float:
    return REGISTRY.get_sample_value("upsert_database_conflicts_total",
                                     {"sqlstate": sqlstate}) or 0.0


async def _all_waiting(db: asyncpg.Connection, n: int) -> bool:
    return await lock_waiters(db) >= n


async def test_overlapping_batches_do_not_deadlock(
        settings: Settings, producer: Producer, db: asyncpg.Connection) -> None:
    """Eight batches at once over the same 300 keys, each in its own random order, all
    held up by a lock on the last key until every one of them is in flight."""
    settings.retry.delays_s = [30.0]  # a trip through the delay queue would time out
    await db.execute("INSERT INTO vbapi.armor_code_ex_code (armorcodeexcode_key, armor_code, "
                     "ex_code) VALUES (299, 'X', 'X')")
    rng = random.Random(11)
    before = conflicts("40P01")
    async with running(settings):
        batches = []
        for n in range(8):
            keys = list(range(300))
            rng.shuffle(keys)
            batches.append([samples.armor(k, armor_Code=f"A{n}") for k in keys])
        # One timestamp for all: sends that straddle a second boundary would otherwise make
        # a 409 the right answer for some items.
        stamp = dt.datetime.now(dt.UTC).replace(microsecond=0)
        async with db.transaction():
            await db.execute("SELECT 1 FROM vbapi.armor_code_ex_code "
                             "WHERE armorcodeexcode_key = 299 FOR UPDATE")
            sent = [await producer.send(samples.ARMOR_PATH, items, timestamp=stamp)
                    for items in batches]
            await wait_until(lambda: _all_waiting(db, 8), timeout_s=15)
        replies = [await producer.reply(c, timeout_s=20) for c in sent]
    for reply in replies:
        assert reply.status == 207
        assert {d["status"] for d in reply.body["data"]} <= {200, 201}
    assert sum(d["status"] == 201 for r in replies for d in r.body["data"]) == 299
    assert conflicts("40P01") == before
    assert await db.fetchval("SELECT count(DISTINCT armor_code) FROM "
                             "vbapi.armor_code_ex_code") == 1


async def test_a_deadlock_is_retried_in_place(
        settings: Settings, producer: Producer, db: asyncpg.Connection) -> None:
    """A real deadlock between the worker and another writer that locks in the opposite
    order; the worker's transaction is the victim and is retried without a delay queue."""
    settings.retry.delays_s = [30.0]
    await db.execute("INSERT INTO vbapi.armor_code_ex_code (armorcodeexcode_key, armor_code, "
                     "ex_code) VALUES (1, 'X', 'X'), (2, 'X', 'X')")
    # The other writer waits long before looking for deadlocks, so the worker (1 s, the
    # server default) finds this one and is the one rolled back.
    await db.execute("SET deadlock_timeout = '20s'")
    before = conflicts("40P01")
    async with running(settings):
        async with db.transaction():
            await db.execute("UPDATE vbapi.armor_code_ex_code SET ex_code = 'other' "
                             "WHERE armorcodeexcode_key = 2")
            sent = await producer.send(samples.ARMOR_PATH, [samples.armor(2), samples.armor(1)],
                                       routing_key="ArmorCodeExCode")
            await wait_until(lambda: lock_waiters(db), timeout_s=10)  # worker holds 1, waits 2
            # Key 1 is the worker's: this waits until the deadlock is found and the
            # worker's transaction rolled back.
            await asyncio.wait_for(db.execute(
                "UPDATE vbapi.armor_code_ex_code SET ex_code = 'other' "
                "WHERE armorcodeexcode_key = 1"), timeout=10)
        reply = await producer.reply(sent, timeout_s=10)
    assert statuses(reply) == [(200, "Updated"), (200, "Updated")]
    assert conflicts("40P01") == before + 1
    rows = await db.fetch("SELECT ex_code FROM vbapi.armor_code_ex_code")
    assert [r[0] for r in rows] == ["E1", "E1"]


FLAKY_SQL = """
CREATE SEQUENCE vbapi.failures;
CREATE FUNCTION vbapi.fail_serialization() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- sequences are not transactional: the count survives the rollbacks
    IF nextval('vbapi.failures') <= {fail_times} THEN
        RAISE EXCEPTION 'injected serialization failure' USING ERRCODE = '40001';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER fail_serialization BEFORE INSERT ON vbapi.armor_code_ex_code
    FOR EACH STATEMENT EXECUTE FUNCTION vbapi.fail_serialization();
"""


async def test_a_serialization_failure_is_retried_in_place(dsn: str,
                                                           db: asyncpg.Connection) -> None:
    await db.execute(FLAKY_SQL.format(fail_times=2))
    before = conflicts("40001")
    batch = prepare(samples.ARMOR_PATH, [samples.armor(1)], message_id="flaky")
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        stored = await commit_batch(pool, batch)
    finally:
        await pool.close()
    assert not stored.replayed
    assert [d["status"] for d in orjson.loads(stored.body)["data"]] == [201]
    assert await db.fetchval("SELECT last_value FROM vbapi.failures") == 3
    assert conflicts("40001") == before + 2


async def test_overlapping_batches_under_group_commit_all_land(
        vhost: str, dsn: str, producer: Producer, db: asyncpg.Connection) -> None:
    """Two connections for sixteen batches in flight: the waiting ones are committed in
    groups (worker/store/grouping.py), which lock batch after batch rather than in one key
    order.  A deadlock between two groups rolls the victim back to one transaction per
    batch; every batch still lands, none through the delay queue.

    All batches carry one timestamp: a fallback commits a rolled-back group after a later
    one, and with timestamps a second apart the older write would rightly be refused (409,
    see test_older_batches_never_overwrite_newer_rows); here every write must apply."""
    settings = make_settings(vhost, {"demo": {"dsn": dsn, "pool_max_size": 2}},
                             amqp={"prefetch_count": 16}, retry={"delays_s": [30.0]})
    rng = random.Random(5)
    sent_at = dt.datetime.now(dt.UTC)
    writers: dict[int, set[str]] = {}
    async with running(settings):
        sent = []
        for n in range(48):
            keys = rng.sample(range(40), 5)
            for k in keys:
                writers.setdefault(k, set()).add(f"A{n}")
            sent.append(await producer.send(
                samples.ARMOR_PATH, [samples.armor(k, armor_Code=f"A{n}") for k in keys],
                timestamp=sent_at))
        replies = [await producer.reply(c, timeout_s=25) for c in sent]
    assert all(r.status == 207 for r in replies)
    assert all(d["status"] in (200, 201) for r in replies for d in r.body["data"])
    stored = dict(await db.fetch(
        "SELECT armorcodeexcode_key, armor_code FROM vbapi.armor_code_ex_code"))
    assert set(stored) == set(writers)
    assert all(stored[k] in writers[k] for k in stored)
    assert await db.fetchval("SELECT count(*) FROM vbapi.upsert_processed_message") == 48


async def test_a_batch_from_the_future_is_refused_and_pins_nothing(
        settings: Settings, producer: Producer, db: asyncpg.Connection) -> None:
    """Issue 18, item 3: a timestamp far ahead of the worker's clock would win over every
    later write (each answered 409); it is a whole-message 400, dead-lettered."""
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=365)
    async with running(settings):
        ahead = await producer.call(samples.BENEFIT_PATH, [samples.benefit("F1")],
                                    timestamp=future)
        now = await producer.call(samples.BENEFIT_PATH, [samples.benefit("F1")])
    assert ahead.status == 400 and ahead.body["data"] is None
    assert ahead.body["error"]["detail"].startswith("timestamp: ")
    assert "ahead of the worker's clock" in ahead.body["error"]["detail"]
    assert statuses(now) == [(201, "Created")]
