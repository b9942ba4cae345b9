"""Declarations, derived DDL and migrations against a real database."""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg
import orjson
import pytest

from schemas.entity import Entity, Parent, audit_fields, integer, text
from schemas.registry import Registry, default_registry, discover_entities
from tests.support import isolated_database
from worker.batch import Request
from worker.migrations import migrate
from worker.processor import Processor
from worker.settings import Settings

ENTITY_TABLES = {"benefit", "armor_code_ex_code", "group_flex_schedule", "group_plan_year",
                 "subscriber_flex_exported"}
PARENT_TABLES = {"benefit_category", "group_flex", "group_division", "subscriber_flex"}


def test_the_five_entities_are_discovered() -> None:
    assert [e.name for e in discover_entities()] == [
        "ArmorCodeExCode", "Benefit", "GroupFlexSchedule", "GroupPlanYear",
        "SubscriberFlexExported"]


@pytest.mark.parametrize(("path", "entity"), [
    ("/benefits-batch", "Benefit"),
    ("/benefits-batch/", "Benefit"),
    ("/armor-code-ex-codes-batch?x=1", "ArmorCodeExCode"),
    ("/groups/G1/flex-schedules-batch", "GroupFlexSchedule"),
    ("/groups/G1/divisions/D1/plan-years-batch", "GroupPlanYear"),
    ("/subscribers/S/groups/G/plans/P/flexes/2024/2024-01-01/exports-batch",
     "SubscriberFlexExported"),
    ("/groups//flex-schedules-batch", None),
    ("/groups/G1/flex-schedules", None),
    ("benefits-batch", None),
    ("/", None),
])
def test_routing(path: str, entity: str | None) -> None:
    route = default_registry().route(path)
    assert (route.entity.name if route else None) == entity


def test_declarations_are_checked() -> None:
    with pytest.raises(ValueError, match="key field 'nope' is not a field"):
        Entity(name="X", table="x", path="/x-batch", key=("nope",),
               fields=(integer("x_Key", required=True),))
    with pytest.raises(ValueError, match="every path parameter needs a binding"):
        Entity(name="X", table="x", path="/a/{aID}/x-batch", key=("x_Key",),
               fields=(integer("x_Key", required=True),))
    with pytest.raises(ValueError, match="differ case-insensitively"):
        Entity(name="X", table="x", path="/x-batch", key=("x_Key",),
               fields=(integer("x_Key", required=True), text("X_KEY")))


async def test_migrate_creates_tables_with_foreign_keys_and_is_idempotent() -> None:
    async with isolated_database() as dsn:
        first = await migrate(dsn)
        assert first and await migrate(dsn) == []
        conn = await asyncpg.connect(dsn)
        try:
            tables = {r["table_name"] for r in await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema='vbapi'")}
            assert tables >= ENTITY_TABLES | PARENT_TABLES
            fks = {(r["child"], r["parent"]) for r in await conn.fetch(
                "SELECT conrelid::regclass::text AS child, confrelid::regclass::text AS parent "
                "FROM pg_constraint WHERE contype = 'f'")}
            assert fks == {("vbapi.benefit", "vbapi.benefit_category"),
                           ("vbapi.group_flex_schedule", "vbapi.group_flex"),
                           ("vbapi.group_plan_year", "vbapi.group_division"),
                           ("vbapi.subscriber_flex_exported", "vbapi.subscriber_flex")}
            columns = {r["column_name"] for r in await conn.fetch(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema='vbapi' AND table_name='group_plan_year'")}
            assert {"qtr4_planyear", "qtr4_out_of_pocket_type", "upsert_source_ts",
                    "upsert_message_id", "entry_date", "update_user"} <= columns
            hipaa = await conn.fetchval(
                "SELECT data_type FROM information_schema.columns WHERE table_schema='vbapi' "
                "AND table_name='benefit' AND column_name='hipaa_code'")
            assert hipaa == "text"
            versions = await conn.fetch("SELECT version FROM vbapi.schema_migrations")
            assert [r["version"] for r in versions] == [1]
        finally:
            await conn.close()


async def test_two_workers_migrating_at_once() -> None:
    async with isolated_database() as dsn:
        results = await asyncio.gather(migrate(dsn), migrate(dsn), migrate(dsn))
        assert sum(1 for r in results if r) == 1  # one did the work, the others found it done


async def test_migrate_creates_a_missing_database() -> None:
    async with isolated_database() as dsn:
        pass  # made and dropped: the name is free now
    try:
        assert await migrate(dsn)
    finally:
        admin = await asyncpg.connect(dsn.rsplit("/", 1)[0] + "/postgres")
        await admin.execute(f'DROP DATABASE IF EXISTS "{dsn.rsplit("/", 1)[1]}" WITH (FORCE)')
        await admin.close()


# A new endpoint is one declaration: here one made up for the test, never seen by the code.
WIDGET = Entity(
    name="Widget", table="widget", path="/shops/{shopID}/widgets-batch",
    key=("widget_Key",), bindings={"shopID": "shop_ID"},
    parent=Parent(table="shop", fields=("shop_ID",)),
    fields=(integer("widget_Key", required=True), text("shop_ID", required=True, max_length=5),
            text("label", max_length=3), *audit_fields()),
)


async def test_a_new_declaration_is_all_a_new_endpoint_needs() -> None:
    registry = Registry((*default_registry().entities, WIDGET))
    async with isolated_database() as dsn:
        applied = await migrate(dsn, registry)
        assert "entity Widget -> vbapi.widget" in applied
        conn = await asyncpg.connect(dsn)
        await conn.execute("INSERT INTO vbapi.shop (shop_id) VALUES ('S1')")
        settings = Settings(databases={"demo": {"dsn": dsn}})
        processor = Processor(settings, registry=registry)
        items = [{"widget_Key": 1, "shop_ID": "S1", "label": "abc"},
                 {"WIDGET_KEY": 2, "shop_id": "S1", "label": "abcd"},
                 {"widget_Key": 3, "shop_ID": "S2"}]
        request = Request(body=orjson.dumps(items), headers={
            "path": "/shops/S1/widgets-batch", "vbasoftware-database": "demo"})
        try:
            outcome = await processor.process(request, dt.datetime.now(dt.UTC), "A1")
            data = orjson.loads(outcome.body)["data"]
            assert [d["status"] for d in data] == [201, 400, 400]
            assert data[1]["body"] == "label: String should have at most 3 characters"
            assert data[2]["body"] == "shop_ID: 'S2' does not match path shopID 'S1'"
            assert await conn.fetchval("SELECT label FROM vbapi.widget") == "abc"
        finally:
            await processor.databases.close()
            await conn.close()


async def test_a_field_added_to_a_declaration_is_added_to_the_table() -> None:
    wider = Entity(name="Widget", table="widget", path=WIDGET.path, key=WIDGET.key,
                   bindings=WIDGET.bindings, parent=WIDGET.parent,
                   fields=(*WIDGET.fields, text("colour")))
    async with isolated_database() as dsn:
        await migrate(dsn, Registry((WIDGET,)))
        assert await migrate(dsn, Registry((wider,))) == ["entity Widget -> vbapi.widget"]
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval(
                "SELECT count(*) FROM information_schema.columns WHERE table_schema='vbapi' "
                "AND table_name='widget' AND column_name='colour'") == 1
        finally:
            await conn.close()
