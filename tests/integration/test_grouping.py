"""Group commit: batches that wait for a connection share one transaction, yet each gets the
answers, reply and record it would get alone, and a failing one never fails the others."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest

from tests.support import samples
from tests.support.reliability_support import CountingConnection, prepare
from worker.core.batch import Plan
from worker.store.grouping import GroupCommitter
from worker.store.writer import RecordedReply

T1 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
T2 = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)


def answers(reply: RecordedReply) -> list[tuple[int, str]]:
    return [(d["status"], d["body"]) for d in orjson.loads(reply.body)["data"]]


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    value = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        yield value
    finally:
        await value.close()


async def commit_queued(pool: asyncpg.Pool, batches: list[Plan]) -> list[RecordedReply]:
    """The first batch takes the only connection; the others queue behind it and go as
    one group once it is done."""
    committer = GroupCommitter(pool, connections=1, max_batches=32)
    return list(await asyncio.gather(*(committer.commit(b) for b in batches)))


async def transactions_of(db: asyncpg.Connection, ids: list[str]) -> set[int]:
    return {r[0] for r in await db.fetch(
        "SELECT xmin::text::bigint FROM vbapi.upsert_processed_message "
        "WHERE message_id = ANY($1)", ids)}


async def test_a_group_answers_each_batch_as_if_applied_in_order(
        pool: asyncpg.Pool, db: asyncpg.Connection) -> None:
    first = prepare(samples.BENEFIT_PATH, [samples.benefit("B0")], message_id="g0",
                    timestamp=T1)
    create = prepare(samples.BENEFIT_PATH, [samples.benefit("B1", benefit_Description="a")],
                     message_id="g1", timestamp=T2)
    update = prepare(samples.BENEFIT_PATH, [samples.benefit("B1", benefit_Description="b"),
                                            samples.benefit("B2")],
                     message_id="g2", timestamp=T2)
    older = prepare(samples.BENEFIT_PATH, [samples.benefit("B1", benefit_Description="old"),
                                           samples.benefit("B3", pend_Flag="NO")],
                    message_id="g3", timestamp=T1)
    orphan = prepare(samples.BENEFIT_PATH, [samples.benefit("B4", benefit_Category="NONE")],
                     message_id="g4", timestamp=T2)
    replies = await commit_queued(pool, [first, create, update, older, orphan])

    assert [answers(r) for r in replies] == [
        [(201, "Created")],
        [(201, "Created")],
        [(200, "Updated"), (201, "Created")],
        [(409, "not applied: the stored record was written by a newer batch"),
         (400, "pend_Flag: String should have at most 1 character")],
        [(404, "parent benefit_category not found: benefit_Category='NONE'")],
    ]
    assert not any(r.replayed for r in replies)
    assert await db.fetchval(
        "SELECT benefit_description FROM vbapi.benefit WHERE benefit_code = 'B1'") == "b"
    # Each batch has its own record holding the reply it was sent ...
    recorded = {r["message_id"]: bytes(r["reply"]) for r in await db.fetch(
        "SELECT message_id, reply FROM vbapi.upsert_processed_message")}
    assert recorded == {f"g{i}": r.body for i, r in enumerate(replies)}
    # ... and the four that waited were committed in one transaction.
    assert len(await transactions_of(db, ["g1", "g2", "g3", "g4"])) == 1
    assert await transactions_of(db, ["g0"]) != await transactions_of(db, ["g1"])


async def test_a_batch_seen_before_ungroups_without_changing_the_others(
        pool: asyncpg.Pool, db: asyncpg.Connection) -> None:
    earlier = prepare(samples.BENEFIT_PATH, [samples.benefit("B1")], message_id="seen")
    (first_reply,) = await commit_queued(pool, [earlier])
    again = prepare(samples.BENEFIT_PATH, [samples.benefit("B1", benefit_Description="x")],
                    message_id="seen")
    blocker = prepare(samples.BENEFIT_PATH, [samples.benefit("B0")], message_id="b0")
    fresh = prepare(samples.BENEFIT_PATH, [samples.benefit("B2")], message_id="fresh")
    replies = await commit_queued(pool, [blocker, fresh, again])

    assert answers(replies[1]) == [(201, "Created")] and not replies[1].replayed
    assert replies[2].replayed and replies[2].body == first_reply.body
    assert await db.fetchval(
        "SELECT benefit_description FROM vbapi.benefit WHERE benefit_code = 'B1'") is None


async def test_an_item_error_in_one_batch_ungroups_and_fails_only_that_item(
        pool: asyncpg.Pool, db: asyncpg.Connection) -> None:
    await db.execute("ALTER TABLE vbapi.benefit ADD CONSTRAINT no_boom "
                     "CHECK (benefit_description IS DISTINCT FROM 'boom')")
    batches = [
        prepare(samples.BENEFIT_PATH, [samples.benefit("B0")], message_id="e0"),
        prepare(samples.BENEFIT_PATH, [samples.benefit("B1")], message_id="e1"),
        prepare(samples.BENEFIT_PATH, [samples.benefit("B2", benefit_Description="boom"),
                                       samples.benefit("B3")], message_id="e2"),
        prepare(samples.BENEFIT_PATH, [samples.benefit("B4")], message_id="e3"),
    ]
    replies = await commit_queued(pool, batches)

    assert answers(replies[1]) == [(201, "Created")]
    bad, good = answers(replies[2])
    assert bad[0] == 400 and bad[1].startswith("benefit_Description"), bad
    assert good == (201, "Created")
    assert answers(replies[3]) == [(201, "Created")]
    assert {r[0] for r in await db.fetch("SELECT benefit_code FROM vbapi.benefit")} == {
        "B0", "B1", "B3", "B4"}
    # Fallen back: one transaction per batch.
    assert len(await transactions_of(db, ["e1", "e2", "e3"])) == 3


async def test_big_batches_and_a_free_connection_are_never_grouped(
        pool: asyncpg.Pool, db: asyncpg.Connection) -> None:
    big = prepare(samples.BENEFIT_PATH, [samples.benefit(f"K{i}") for i in range(1001)],
                  message_id="big")
    small = prepare(samples.BENEFIT_PATH, [samples.benefit("S1")], message_id="small")
    blocker = prepare(samples.BENEFIT_PATH, [samples.benefit("B0")], message_id="b0")
    replies = await commit_queued(pool, [blocker, big, small])
    assert all(r.status == 207 and not r.replayed for r in replies)
    assert len(await transactions_of(db, ["b0", "big", "small"])) == 3


async def test_batches_sharing_no_key_are_written_with_one_statement_each_kind(
        dsn: str, db: asyncpg.Connection) -> None:
    """Batches of one entity with disjoint keys: one parent check, one upsert and one
    insert of records for the whole group, and still each batch's own answers: 404 for its
    orphan, 409 against a newer stored row, 400 kept, 201/200 for repeats of a key, its
    own producer and timestamp on its rows."""
    counted = await asyncpg.create_pool(dsn, min_size=1, max_size=1,
                                        connection_class=CountingConnection)
    try:
        newer = prepare(samples.BENEFIT_PATH, [samples.benefit("B9", benefit_Description="new")],
                        message_id="n0", timestamp=T2)
        blocker = prepare(samples.BENEFIT_PATH, [samples.benefit("B0")], message_id="m0",
                          timestamp=T1)
        stale = prepare(samples.BENEFIT_PATH,
                        [samples.benefit("B9", benefit_Description="old"),
                         samples.benefit("B1")], message_id="m1", timestamp=T1)
        mixed = prepare(samples.BENEFIT_PATH,
                        [samples.benefit("B2", pend_Flag="NO"),
                         samples.benefit("B3", benefit_Category="NONE"),
                         samples.benefit("B4", benefit_Description="x"),
                         samples.benefit("B4", benefit_Description="y")],
                        message_id="m2", timestamp=T2)
        mixed = dataclasses.replace(mixed, user_id="producer-2")
        await commit_queued(counted, [newer])
        async with counted.acquire() as conn:
            conn.sent.clear()
        replies = await commit_queued(counted, [blocker, stale, mixed])
        async with counted.acquire() as conn:
            sent = list(conn.sent)
    finally:
        await counted.close()

    assert [answers(r) for r in replies] == [
        [(201, "Created")],
        [(409, "not applied: the stored record was written by a newer batch"),
         (201, "Created")],
        [(400, "pend_Flag: String should have at most 1 character"),
         (404, "parent benefit_category not found: benefit_Category='NONE'"),
         (201, "Created"), (200, "Updated")],
    ]
    # The group of two, after the blocker: parent check, an upsert per round (B4 repeats
    # in one batch: two rounds, its items applied one by one), records, and nothing else
    # in its transaction.
    begin = len(sent) - 1 - sent[::-1].index("BEGIN;")
    group = sent[begin:sent.index("COMMIT;", begin) + 1]
    assert len(group) == 6, group
    assert "benefit_category" in group[1] and "NOT EXISTS" in group[1]
    assert "jsonb_array_elements" in group[2] and "upsert_ts" in group[2]
    assert "jsonb_array_elements" in group[3]  # round two: one batch's row alone
    assert "unnest" in group[4] and "upsert_processed_message" in group[4]
    assert len(await transactions_of(db, ["m1", "m2"])) == 1
    rows = {r["benefit_code"]: r for r in await db.fetch(
        "SELECT benefit_code, benefit_description, entry_user, upsert_source_ts, "
        "upsert_message_id FROM vbapi.benefit")}
    assert rows["B9"]["benefit_description"] == "new"
    assert (rows["B1"]["upsert_source_ts"], rows["B1"]["upsert_message_id"]) == (T1, "m1")
    assert rows["B4"]["benefit_description"] == "y"
    assert (rows["B4"]["entry_user"], rows["B4"]["upsert_source_ts"],
            rows["B4"]["upsert_message_id"]) == ("producer-2", T2, "m2")
    recorded = {r["message_id"]: bytes(r["reply"]) for r in await db.fetch(
        "SELECT message_id, reply FROM vbapi.upsert_processed_message")}
    assert recorded["m1"] == replies[1].body and recorded["m2"] == replies[2].body


async def test_small_batches_take_at_most_group_connections_transactions_at_a_time(
        dsn: str, db: asyncpg.Connection) -> None:
    """Eight connections, but small batches get two turns: twelve 1-item batches at once
    are two alone and the other ten in groups, not twelve transactions."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=8)
    try:
        committer = GroupCommitter(pool, connections=8, max_batches=32, group_connections=2)
        batches = [prepare(samples.BENEFIT_PATH, [samples.benefit(f"S{i}")],
                           message_id=f"s{i}") for i in range(12)]
        replies = await asyncio.gather(*(committer.commit(b) for b in batches))
    finally:
        await pool.close()
    assert all(answers(r) == [(201, "Created")] for r in replies)
    assert len(await transactions_of(db, [f"s{i}" for i in range(12)])) <= 4
