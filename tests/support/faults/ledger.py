"""The ledger of a fault test: every batch published, and what the database must end up as.

The model is the contract's section 4 applied literally: each batch exactly once, in
timestamp order, each item over the row its key holds.  Every batch gets its own whole
second as timestamp (AMQP timestamps have 1-second resolution), so "in timestamp order" is
one total order and no tie-breaking rule is needed; batches are *published* out of that
order, so the worker also has to answer 409 for the ones that arrive late.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

ENTITY = "ArmorCodeExCode"
PATH = "/armor-code-ex-codes-batch"
KEY = "armorCodeExCode_Key"
# Far enough in the past that no real clock in the test collides with it.
BASE_TS = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class LedgerBatch:
    """One published batch: its id, its timestamp (whole seconds) and its items."""

    message_id: str
    ts: dt.datetime
    items: tuple[dict[str, Any], ...]

    @property
    def body(self) -> bytes:
        return orjson.dumps(list(self.items))


@dataclass(frozen=True)
class Received:
    """One reply as it arrived."""

    status: int
    body: bytes
    headers: dict[str, Any]


def make_batches(count: int, *, keys: int, items: int, rng: random.Random,
                 jitter: int = 12) -> list[LedgerBatch]:
    """``count`` batches over ``keys`` keys, in publishing order.

    Batch ``i`` has timestamp BASE_TS + i seconds; publishing order is that
    order shuffled locally (each batch moves up to ``jitter`` places), so late arrivals meet
    rows a newer batch already wrote.  Some batches hold one key twice (the later item wins).
    """
    batches = []
    for i in range(count):
        ts = BASE_TS + dt.timedelta(seconds=i)
        chosen = [rng.randrange(keys) for _ in range(items)]
        batch_items = tuple(
            {KEY: key, "armor_Code": f"t{i}", "ex_Code": f"i{n}"}
            for n, key in enumerate(chosen))
        batches.append(LedgerBatch(uuid.uuid4().hex, ts, batch_items))
    order = sorted(range(count), key=lambda i: i + rng.uniform(0, jitter))
    return [batches[i] for i in order]


def expected_rows(batches: list[LedgerBatch]) -> dict[int, tuple[str, str, str, dt.datetime]]:
    """Key -> (armor_Code, ex_Code, message_id, ts): each batch once, in timestamp order."""
    state: dict[int, tuple[str, str, str, dt.datetime]] = {}
    for batch in sorted(batches, key=lambda b: b.ts):
        for item in batch.items:
            state[item[KEY]] = (item["armor_Code"], item["ex_Code"], batch.message_id, batch.ts)
    return state


async def stored_rows(conn: asyncpg.Connection) -> dict[int, tuple[str, str, str, dt.datetime]]:
    rows = await conn.fetch(
        "SELECT armorcodeexcode_key, armor_code, ex_code, upsert_message_id, upsert_source_ts "
        "FROM vbapi.armor_code_ex_code")
    return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}


def check_replies(batches: list[LedgerBatch], replies: dict[str, list[Received]]) -> None:
    """Every batch answered; every copy of one answer identical; item answers consistent
    with the model (one 201 per key overall, 409 only under a newer batch, never 409 for
    the batch that must win)."""
    by_id = {b.message_id: b for b in batches}
    missing = sorted(set(by_id) - set(replies))
    assert not missing, f"{len(missing)} of {len(by_id)} batches never answered: {missing[:5]}"
    unknown = sorted(set(replies) - set(by_id))
    assert not unknown, f"replies to batches nobody published: {unknown[:5]}"

    newest: dict[int, dt.datetime] = {}
    for batch in batches:
        for item in batch.items:
            newest[item[KEY]] = max(newest.get(item[KEY], batch.ts), batch.ts)

    created: Counter[int] = Counter()
    for message_id, copies in replies.items():
        first = copies[0]
        for other in copies[1:]:
            assert (other.status, other.body) == (first.status, first.body), (
                f"redelivery of {message_id} answered differently:\n{first.body!r}\n"
                f"{other.body!r}")
            # Headers too, activity-id included: a recorded reply keeps its first one.
            assert other.headers == first.headers, message_id
        batch = by_id[message_id]
        assert first.status == 207, f"{message_id}: status {first.status}: {first.body!r}"
        data = orjson.loads(first.body)["data"]
        assert len(data) == len(batch.items)
        for item, answer in zip(batch.items, data, strict=True):
            key = item[KEY]
            assert answer["id"] == [{"key": KEY, "value": key}]
            status = answer["status"]
            assert status in (200, 201, 409), f"{message_id}: unexpected item answer {answer}"
            if status == 201:
                created[key] += 1
            # The batch with the newest timestamp for a key must win it; any other may
            # lose (409) or win for a while (200/201) depending on arrival order.
            if status == 409:
                assert newest[key] > batch.ts, (
                    f"{message_id}: 409 for key {key} although no newer batch holds it")
    twice = {k: n for k, n in created.items() if n != 1}
    assert not twice, f"keys created other than exactly once: {twice}"
    assert set(created) == set(newest), "some key was never answered 201"


async def check_ledger(conn: asyncpg.Connection, batches: list[LedgerBatch],
                       replies: dict[str, list[Received]]) -> None:
    """The whole assertion of a fault test: replies as above, and the stored rows equal to
    applying every batch exactly once in timestamp order."""
    check_replies(batches, replies)
    expected = expected_rows(batches)
    stored = await stored_rows(conn)
    diff = {k: (expected.get(k), stored.get(k)) for k in set(expected) | set(stored)
            if expected.get(k) != stored.get(k)}
    assert not diff, f"{len(diff)} rows differ from the model (expected, stored): " + str(
        dict(list(diff.items())[:5]))
    processed = await conn.fetchval("SELECT count(*) FROM vbapi.upsert_processed_message")
    assert processed == len(batches), "one processed-message record per batch"


async def grouped_commits(conn: asyncpg.Connection) -> int:
    """Batches committed in a transaction with others (group commit): their records share
    the transaction's now()."""
    return int(await conn.fetchval(
        "SELECT coalesce(sum(n), 0) FROM (SELECT count(*) AS n "
        "FROM vbapi.upsert_processed_message GROUP BY processed_at HAVING count(*) > 1) g"))


def replies_by_status(replies: dict[str, list[Received]]) -> dict[int, int]:
    counts: dict[int, int] = defaultdict(int)
    for copies in replies.values():
        counts[copies[0].status] += 1
    return dict(counts)


def seeded_rng(name: str) -> random.Random:
    """A random generator whose seed is printed (shown when the test fails) and can be
    forced with FAULTS_SEED to replay a failure."""
    seed = int(os.environ.get("FAULTS_SEED") or random.SystemRandom().randrange(2**32))
    print(f"{name}: FAULTS_SEED={seed}")
    return random.Random(seed)
