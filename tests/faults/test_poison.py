"""Poison messages interleaved with good batches: each bad one is answered with its RFC 7807
error and lands in vbapi.dead with body, properties and x-upsert-* headers; every good one
lands; the worker never stalls on the bad ones."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
import pytest

from tests.support.faults.ledger import (
    BASE_TS,
    KEY,
    PATH,
    check_ledger,
    make_batches,
    seeded_rng,
)
from tests.support.faults.processes import Spawn

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

RETRY_S = [0.2, 0.5]
MAX_DECOMPRESSED = 1024 * 1024
MAX_ITEMS = 50
GOOD_HEADERS = {"path": PATH, "vbasoftware-database": "demo"}
ITEM = {KEY: 1, "armor_Code": "a", "ex_Code": "e"}


@dataclass
class Poison:
    name: str
    status: int
    body: bytes
    headers: dict[str, Any] = field(default_factory=lambda: dict(GOOD_HEADERS))
    properties: dict[str, Any] = field(default_factory=dict)
    message_id: str = field(default_factory=lambda: uuid.uuid4().hex)


def poisons() -> list[Poison]:
    good_body = orjson.dumps([ITEM])
    no_path = {"vbasoftware-database": "demo"}
    return [
        Poison("malformed JSON", 400, b'[{"armorCodeExCode_Key": 1,'),
        Poison("not UTF-8", 400, b"\xff\xfe[\x00]"),
        Poison("not an array", 400, orjson.dumps(ITEM)),
        Poison("a bare number", 400, b"42"),
        Poison("missing path header", 400, good_body, headers=no_path),
        Poison("missing database header", 400, good_body, headers={"path": PATH}),
        Poison("no headers at all", 400, good_body, headers={}),
        Poison("unknown path", 404, good_body,
               headers={"path": "/no-such-endpoint-batch", "vbasoftware-database": "demo"}),
        Poison("unknown database", 404, good_body,
               headers={"path": PATH, "vbasoftware-database": "nowhere"}),
        Poison("gzip bomb", 413, gzip.compress(b"0" * (8 * MAX_DECOMPRESSED)),
               properties={"content_encoding": "gzip"}),
        Poison("not gzip at all", 400, good_body, properties={"content_encoding": "gzip"}),
        Poison("unknown encoding", 415, good_body, properties={"content_encoding": "br"}),
        Poison("wrong content type", 415, good_body, properties={"content_type": "text/plain"}),
        Poison("too many items", 413, orjson.dumps([ITEM] * (MAX_ITEMS + 1))),
    ]


async def test_poison_interleaved_with_good_batches(spawn: Spawn, broker_for, dsn: str,
                                                    db: asyncpg.Connection) -> None:
    rng = seeded_rng("poison")
    broker = await broker_for(RETRY_S)
    good = make_batches(120, keys=30, items=10, rng=rng)
    bad = poisons() * 3  # each kind several times, each copy its own message
    bad = [Poison(p.name, p.status, p.body, dict(p.headers), dict(p.properties))
           for p in bad]
    stream: list[Any] = [*good, *bad]
    rng.shuffle(stream)
    worker = spawn(dsn, retry={"delays_s": RETRY_S, "max_deliveries": 5},
                   limits={"max_decompressed_bytes": MAX_DECOMPRESSED, "max_items": MAX_ITEMS})

    ts = {p.message_id: BASE_TS + dt.timedelta(days=1, seconds=n) for n, p in enumerate(bad)}
    for entry in stream:
        if isinstance(entry, Poison):
            await broker.publish_raw(entry.message_id, entry.body, ts=ts[entry.message_id],
                                     headers=entry.headers, **entry.properties)
        else:
            await broker.publish(entry)

    all_ids = {b.message_id for b in good} | {p.message_id for p in bad}
    await broker.wait_answered(all_ids, timeout_s=60)
    await broker.wait_drained()
    assert worker.running()
    worker.terminate()
    assert await asyncio.to_thread(worker.wait, 30) == 0

    # Every good batch applied exactly once, in timestamp order.
    good_replies = {k: v for k, v in broker.replies.items() if k in {b.message_id for b in good}}
    await check_ledger(db, good, good_replies)

    # Every bad one answered with its problem, once.
    for poison in bad:
        copies = broker.replies[poison.message_id]
        assert len(copies) == 1, poison.name
        reply = copies[0]
        assert reply.status == poison.status, (poison.name, reply.body)
        body = orjson.loads(reply.body)
        assert body["data"] is None, poison.name
        problem = body["error"]
        assert problem["status"] == poison.status, poison.name
        assert problem["title"] and problem["detail"] and problem["type"], poison.name
        assert problem["instance"] == poison.headers.get("path"), poison.name
        assert reply.headers["activity-id"] == body["debug"]["activityID"], poison.name

    # ... and dead-lettered once, as published, with what happened to it.
    dead = await broker.dead_letters()
    by_id = {p.message_id: p for p in bad}
    assert sorted(m.message_id or "" for m in dead) == sorted(by_id), "one dead letter each"
    for message in dead:
        poison = by_id[message.message_id or ""]
        reply = broker.replies[poison.message_id][0]
        headers = dict(message.headers or {})
        assert message.body == poison.body, poison.name
        for name, value in poison.headers.items():
            assert headers[name] == value, poison.name
        assert message.content_type == poison.properties.get("content_type",
                                                             "application/json")
        assert message.content_encoding == poison.properties.get("content_encoding")
        assert message.correlation_id == poison.message_id
        assert message.timestamp is not None
        assert message.timestamp.replace(tzinfo=dt.UTC) == ts[poison.message_id]
        assert headers["x-upsert-error-status"] == poison.status, poison.name
        assert headers["x-upsert-error-title"], poison.name
        assert headers["x-upsert-error-detail"], poison.name
        assert headers["x-upsert-activity-id"] == reply.headers["activity-id"], poison.name
        assert headers["x-upsert-attempts"] == 1, poison.name
        dt.datetime.fromisoformat(str(headers["x-upsert-dead-lettered-at"]))
