"""Every one of the 730 endpoints, end to end through the real broker and database.

For each entity: an item generated from its declaration, its parents created first, is
published and answered 201; published again changed, 200, and the stored row holds what
was sent; then one invalid item for each kind of constraint the entity has (missing
required field, over-long string, wrong type, unknown field, path mismatch) is answered
400 naming the field.  The entities are tested in chunks, each chunk in one database with
one worker, its endpoints concurrently.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from schemas.ddl import qualified, quote
from schemas.entity import Entity, Field
from schemas.kinds import Kind
from schemas.registry import default_registry
from tests.support.configs import make_settings
from tests.support.databases import isolated_database
from tests.support.producer import Producer
from tests.support.running import running
from tests.support.samples import (
    Parents,
    changed_value,
    insert_parents,
    make_item,
    path_for,
    updatable_field,
)
from tests.support.services import amqp_url

ENTITIES = default_registry().entities
CHUNKS = 8
CONCURRENCY = 24


def chunk(index: int) -> list[tuple[int, Entity]]:
    return [(n, e) for n, e in enumerate(ENTITIES) if n % CHUNKS == index]


def invalid_items(entity: Entity, item: dict[str, Any]) -> list[tuple[str, str, dict]]:
    """(constraint, field it must name, the item) for each kind of constraint."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    required = next((f for f in entity.fields if f.required), None)
    if required is not None:
        out.append(("missing", required.name,
                    {k: v for k, v in item.items() if k != required.name}))
    longest = next((f for f in entity.fields if f.kind is Kind.TEXT and f.max_length), None)
    if longest is not None:
        length = longest.max_length or 0
        out.append(("too long", longest.name, {**item, longest.name: "x" * (length + 1)}))
    typed = entity.fields[-1]
    out.append(("wrong type", typed.name, {**item, typed.name: _wrong_type(typed)}))
    out.append(("unknown", "no_Such_Field", {**item, "no_Such_Field": 1}))
    for name in entity.bindings.values():
        field = entity.field_named(name)
        out.append(("path mismatch", name, {**item, name: changed_value(field, item[name])}))
        break
    return out


def _wrong_type(field: Field) -> Any:
    return {Kind.TEXT: 123, Kind.INTEGER: "12", Kind.BOOLEAN: "true", Kind.DECIMAL: "1.5",
            Kind.DATETIME: 12, Kind.OBJECTS: "x"}[field.kind]


def _expected(field: Field, value: Any) -> Any:
    if value is None:
        return None
    if field.kind is Kind.DATETIME:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if field.kind is Kind.DECIMAL:
        return Decimal(str(value))
    return value


def _stored(field: Field, value: Any) -> Any:
    return json.loads(value) if field.kind is Kind.OBJECTS and value is not None else value


async def _stored_row(db: asyncpg.Connection | asyncpg.Pool, entity: Entity,
                      item: dict[str, Any]) -> asyncpg.Record | None:
    """The stored row with the item's key, if any."""
    where = " AND ".join(f"{quote(f.column)} = ${i + 1}" for i, f in enumerate(entity.key_fields))
    return await db.fetchrow(f"SELECT * FROM {qualified(entity.table)} WHERE {where}",
                             *(_expected(f, item[f.name]) for f in entity.key_fields))


async def _key_taken(db: asyncpg.Connection, entity: Entity, item: dict[str, Any]) -> bool:
    return await _stored_row(db, entity, item) is not None


async def _items_with_parents(db: asyncpg.Connection, entities: list[tuple[int, Entity]]
                              ) -> dict[str, dict[str, Any]]:
    """An item per entity whose key no record has yet, its parents created first.  A
    parent made for one item may take the key another item was given (short key columns):
    that item is made again with another number."""
    parents = Parents(default_registry())
    items: dict[str, dict[str, Any]] = {}
    pending = list(entities)
    for attempt in range(10):
        for n, entity in pending:
            items[entity.name] = make_item(entity, 1000 + n + attempt * 7919)
            parents.need(entity, items[entity.name])
        await insert_parents(db, parents)
        pending = [(n, e) for n, e in entities if await _key_taken(db, e, items[e.name])]
        if not pending:
            return items
    raise AssertionError(f"keys still taken: {[e.name for _, e in pending]}")


async def _check_endpoint(entity: Entity, item: dict[str, Any], producer: Producer,
                          db: asyncpg.Pool) -> list[str]:
    """Everything the endpoint must do; returns what it did wrong."""
    problems: list[str] = []
    path = path_for(entity, item)
    expected_id = [{"key": k, "value": item[k]} for k in entity.key]

    created = await producer.call(path, [item], routing_key=entity.name)
    if created.body.get("data") != [{"id": expected_id, "status": 201, "body": "Created"}]:
        return [f"create: {created.body}"]

    field = updatable_field(entity)
    changed = dict(item)
    if field is not None:
        changed[field.name] = changed_value(field, item[field.name])
    updated = await producer.call(path, [changed], routing_key=entity.name)
    if updated.body.get("data") != [{"id": expected_id, "status": 200, "body": "Updated"}]:
        problems.append(f"update: {updated.body}")
    row = await _stored_row(db, entity, item)
    if row is None:
        return [*problems, "no stored row after the update"]
    for f in entity.fields:
        if _stored(f, row[f.column]) != _expected(f, changed[f.name]):
            problems.append(f"stored {f.name}: {row[f.column]!r} != {changed[f.name]!r}")

    cases = invalid_items(entity, item)
    reply = await producer.call(path, [bad for _, _, bad in cases], routing_key=entity.name)
    for (constraint, name, _), answer in zip(cases, reply.body.get("data") or [], strict=False):
        if answer["status"] != 400 or not answer["body"].startswith(f"{name}:"):
            problems.append(f"{constraint}: {answer}")
    if len(reply.body.get("data") or []) != len(cases):
        problems.append(f"invalid items: {reply.body}")
    return problems


@pytest.mark.timeout(240)
@pytest.mark.parametrize("index", range(CHUNKS))
async def test_every_endpoint(index: int, vhost: str) -> None:
    entities = chunk(index)
    async with isolated_database(migrated=True) as dsn:
        settings = make_settings(vhost, {"demo": {"dsn": dsn}},
                                 amqp={"prefetch_count": 32})
        db = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        try:
            async with db.acquire() as conn:
                items = await _items_with_parents(conn, entities)
            async with running(settings), Producer(amqp_url(vhost)) as producer:
                limit = asyncio.Semaphore(CONCURRENCY)

                async def check(entity: Entity) -> tuple[str, list[str]]:
                    async with limit:
                        return entity.name, await _check_endpoint(
                            entity, items[entity.name], producer, db)

                results = await asyncio.gather(*(check(e) for _, e in entities))
        finally:
            await db.close()
    failures = {name: problems for name, problems in results if problems}
    assert not failures, f"{len(failures)} of {len(entities)} endpoints failed: {failures}"
    assert len(results) == len(entities)
