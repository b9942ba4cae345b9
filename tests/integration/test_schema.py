"""Declarations, derived DDL and migrations against a real database."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest

from schemas.entity import Entity, Field, Parent, Table, audit_fields, integer, text
from schemas.kinds import Kind
from schemas.registry import Registry, default_registry
from tests.support.databases import isolated_database
from tests.support.paths import DATA
from worker.core.request import Request
from worker.processor import Processor
from worker.settings import Settings
from worker.store.migrations import MigrationRefused, migrate

SEEDS = {"Benefit": ("/benefits-batch", "benefit"),
         "ArmorCodeExCode": ("/armor-code-ex-codes-batch", "armor_code_ex_code"),
         "GroupFlexSchedule": ("/groups/{groupID}/flex-schedules-batch", "group_flex_schedule"),
         "GroupPlanYear": ("/groups/{groupID}/divisions/{divisionID}/plan-years-batch",
                           "group_plan_year"),
         "SubscriberFlexExported": (
             "/subscribers/{subscriberID}/groups/{groupID}/plans/{planID}/flexes/"
             "{calendarYear}/{effectiveDate}/exports-batch", "subscriber_flex_exported")}
PREVIOUS_RELEASE = DATA / "previous_release.sql"


def test_all_730_endpoints_are_declared_and_the_seeds_keep_their_names() -> None:
    registry = default_registry()
    assert len(registry.entities) == 730
    for name, (path, table) in SEEDS.items():
        entity = registry.by_name(name)
        assert (entity.path, entity.table) == (path, table)
    assert registry.by_name("Benefit").model == "BenefitCodes"


@pytest.mark.parametrize(("path", "entity"), [
    ("/benefits-batch", "Benefit"),
    ("/benefits-batch/", "Benefit"),
    ("/armor-code-ex-codes-batch?x=1", "ArmorCodeExCode"),
    ("/groups/G1/flex-schedules-batch", "GroupFlexSchedule"),
    ("/groups/G1/divisions/D1/plan-years-batch", "GroupPlanYear"),
    ("/subscribers/S/groups/G/plans/P/flexes/2024/2024-01-01/exports-batch",
     "SubscriberFlexExported"),
    ("/plans/P1/lineages", "PlanLineage"),          # a batch path without "-batch"
    ("/claim-batches/7/claims-batch", "ClaimBatch"),
    ("/groups//flex-schedules-batch", None),
    ("/groups/G1/flex-schedules", None),
    ("benefits-batch", None),
    ("/", None),
])
def test_routing(path: str, entity: str | None) -> None:
    route = default_registry().route(path)
    assert (route.entity.name if route else None) == entity


def test_a_literal_segment_wins_over_a_parameter() -> None:
    fields = (integer("k", required=True), text("a_ID", required=True))
    by_param = Entity(name="ByParam", table="by_param", path="/a/{aID}/x-batch", key=("k",),
                      bindings={"aID": "a_ID"}, fields=fields)
    literal = Entity(name="Literal", table="literal", path="/a/special/x-batch", key=("k",),
                     fields=fields)
    registry = Registry((by_param, literal))
    assert registry.route("/a/special/x-batch").entity is literal  # type: ignore[union-attr]
    route = registry.route("/a/other/x-batch")
    assert route is not None and route.entity is by_param and route.params == {"aID": "other"}


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


def test_parent_tables_are_checked_when_the_registry_is_made() -> None:
    child = Entity(name="Child", table="child", path="/c-batch", key=("c_Key",),
                   parents=(Parent("shop", ("shop_ID",)),),
                   fields=(integer("c_Key", required=True), text("shop_ID")))
    with pytest.raises(ValueError, match="parent table shop is not declared"):
        Registry((child,))
    shop = Table("shop", (text("shop_ID", required=True),))
    assert Registry((child,), (shop,))
    with pytest.raises(ValueError, match="declared twice"):
        Registry((child,), (shop, shop))
    clash = Table("child", (integer("c_Key", required=True),))
    with pytest.raises(ValueError, match="declared twice"):
        Registry((child,), (shop, clash))
    wrong_key = Table("shop", (text("shop_ID", required=True), text("x", required=True)))
    with pytest.raises(ValueError, match="is not that table's key"):
        Registry((child,), (wrong_key,))


async def test_first_migration_creates_every_table_key_and_foreign_key() -> None:
    registry = default_registry()
    async with isolated_database() as dsn:
        first = await migrate(dsn)
        assert first and await migrate(dsn) == []
        conn = await asyncpg.connect(dsn)
        try:
            tables = {r["table_name"] for r in await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema='vbapi'")}
            declared = {e.table for e in registry.entities} | {t.name for t in registry.tables}
            assert declared <= tables and len(declared) == 736
            fks = {(r["child"], r["parent"]) for r in await conn.fetch(
                "SELECT conrelid::regclass::text AS child, confrelid::regclass::text AS parent "
                "FROM pg_constraint WHERE contype = 'f'")}
            assert len(fks) == len({(e.table, p.table) for e in registry.entities
                                    for p in e.parents})
            assert {("vbapi.benefit", "vbapi.benefit_category"),
                    ("vbapi.group_flex_schedule", "vbapi.group_flex"),
                    ("vbapi.group_flex_schedule", "vbapi.groups"),
                    ("vbapi.group_plan_year", "vbapi.group_division"),
                    ("vbapi.subscriber_flex_exported", "vbapi.subscriber_flex")} <= fks
            hipaa = await conn.fetchval(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = 'vbapi.benefit'::regclass AND attname = 'hipaa_code'")
            assert hipaa == "character varying(8)"  # the document's length, not the seed's
            objects = await conn.fetchval(
                "SELECT data_type FROM information_schema.columns WHERE table_schema='vbapi' "
                "AND table_name='criteria' AND column_name='criteriadetails'")
            assert objects == "jsonb"
            widest = await conn.fetchval(
                "SELECT count(*) FROM information_schema.columns WHERE table_schema='vbapi' "
                "AND table_name='claim_batch'")
            assert widest == 655 + 2
            versions = await conn.fetch("SELECT version FROM vbapi.schema_migrations")
            assert sorted(r["version"] for r in versions) == [1, 2]
            recorded = await conn.fetchval("SELECT count(*) FROM vbapi.schema_entities")
            assert recorded == 736
        finally:
            await conn.close()


async def test_two_workers_migrating_at_once() -> None:
    async with isolated_database() as dsn:
        results = await asyncio.gather(migrate(dsn), migrate(dsn))
        assert sum(1 for r in results if r) == 1  # one did the work, the other found it done


async def test_migrate_creates_a_missing_database() -> None:
    shop = Table("shop", (text("shop_ID", required=True),))
    async with isolated_database() as dsn:
        pass  # made and dropped: the name is free now
    try:
        assert await migrate(dsn, Registry((WIDGET,), (shop,)))
    finally:
        admin = await asyncpg.connect(dsn.rsplit("/", 1)[0] + "/postgres")
        await admin.execute(f'DROP DATABASE IF EXISTS "{dsn.rsplit("/", 1)[1]}" WITH (FORCE)')
        await admin.close()


# A new endpoint is one declaration: here one made up for the test, never seen by the code.
WIDGET = Entity(
    name="Widget", table="widget", path="/shops/{shopID}/widgets-batch",
    key=("widget_Key",), bindings={"shopID": "shop_ID"},
    parents=(Parent(table="shop", fields=("shop_ID",)),),
    fields=(integer("widget_Key", required=True), text("shop_ID", required=True, max_length=5),
            text("label", max_length=3), *audit_fields()),
)
SHOP = Table("shop", (text("shop_ID", required=True, max_length=5),))


def widget_registry(*fields: Field, key: tuple[str, ...] = ("widget_Key",)) -> Registry:
    widget = Entity(name="Widget", table="widget", path=WIDGET.path, key=key,
                    bindings=WIDGET.bindings, parents=WIDGET.parents,
                    fields=fields or WIDGET.fields)
    return Registry((widget,), (SHOP,))


async def test_a_new_declaration_is_all_a_new_endpoint_needs() -> None:
    registry = widget_registry()
    async with isolated_database() as dsn:
        applied = await migrate(dsn, registry)
        assert 'table vbapi."widget" created' in applied
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


async def _columns(conn: asyncpg.Connection, table: str) -> dict[str, str]:
    return {r["attname"]: r["t"] for r in await conn.fetch(
        "SELECT attname, format_type(atttypid, atttypmod) AS t FROM pg_attribute "
        "WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped",
        f"vbapi.{table}")}


@contextlib.asynccontextmanager
async def widgets(rows: str) -> AsyncIterator[tuple[str, asyncpg.Connection]]:
    """A database migrated for the Widget declaration, holding shops S1 and S2 and the
    widgets ``rows`` (SQL VALUES of widget_key, shop_id, label)."""
    async with isolated_database() as dsn:
        await migrate(dsn, widget_registry())
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("INSERT INTO vbapi.shop VALUES ('S1'), ('S2')")
            await conn.execute(f"INSERT INTO vbapi.widget (widget_key, shop_id, label) "
                               f"VALUES {rows}")
            yield dsn, conn
        finally:
            await conn.close()


async def test_declaration_changes_widen_in_place_and_add_columns() -> None:
    key, shop, _label, *audit = WIDGET.fields
    async with widgets("(1, 'S1', 'abc')") as (dsn, conn):
        wider = Field("label", Kind.TEXT, max_length=10)
        applied = await migrate(dsn, widget_registry(key, shop, wider, text("colour"), *audit))
        assert 'vbapi."widget".label varchar(3) -> varchar(10)' in applied
        assert 'vbapi."widget".colour text added' in applied
        columns = await _columns(conn, "widget")
        assert columns["label"] == "character varying(10)" and columns["colour"] == "text"
        assert await conn.fetchval("SELECT label FROM vbapi.widget") == "abc"
        # Narrower than declared before but wide enough for what is stored: applied.
        assert await migrate(dsn, widget_registry(
            key, shop, Field("label", Kind.TEXT, max_length=3), *audit))
        # Narrower than what is stored: refused, naming column, stored and declared.
        with pytest.raises(MigrationRefused, match=r'vbapi\."widget"\.label: stored values '
                           r"of up to 3 characters \(varchar\(3\)\) do not fit the "
                           r"declared varchar\(2\)"):
            await migrate(dsn, widget_registry(
                key, shop, Field("label", Kind.TEXT, max_length=2), *audit))
        with pytest.raises(MigrationRefused, match="1 stored values of type varchar"):
            await migrate(dsn, widget_registry(key, shop, Field("label", Kind.INTEGER), *audit))
        # Nothing of a refused run was applied or recorded.
        assert (await _columns(conn, "widget"))["label"] == "character varying(3)"


async def test_a_key_change_carries_the_rows_over() -> None:
    async with widgets("(1, 'S1', NULL), (2, 'S2', NULL)") as (dsn, conn):
        applied = await migrate(dsn, widget_registry(key=("shop_ID", "widget_Key")))
        assert 'vbapi."widget" key is now (shop_id, widget_key)' in applied
        assert await conn.fetchval("SELECT count(*) FROM vbapi.widget") == 2
        await conn.execute("INSERT INTO vbapi.widget (widget_key, shop_id) VALUES (1, 'S2')")
        # Back to the narrower key, which the rows now violate: refused.
        with pytest.raises(MigrationRefused, match="do not fit the declared key"):
            await migrate(dsn, widget_registry())


async def test_a_database_of_the_previous_release_is_upgraded_with_its_data() -> None:
    async with isolated_database() as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(PREVIOUS_RELEASE.read_text())
            await conn.execute("""
                INSERT INTO vbapi.benefit_category VALUES ('MED');
                INSERT INTO vbapi.benefit (benefit_code, allow_flat_tax, benefit_category,
                    hipaa_code, medicare, pend_flag) VALUES ('B1', true, 'MED', 'H1', 'N', 'N');
                INSERT INTO vbapi.group_flex VALUES ('G1', 'P1', '2024');
                INSERT INTO vbapi.group_flex_schedule (groupflexschedule_key, calendar_year,
                    group_id, plan_id, schedule_date, schedule_type)
                    VALUES (7, '2024', 'G1', 'P1', now(), 'MONTHLY');
                INSERT INTO vbapi.upsert_processed_message (message_id, status, reply)
                    VALUES ('m1', 207, '\\x7b7d');
            """)
            applied = await migrate(dsn)
            assert 'vbapi."benefit".hipaa_code text -> varchar(8)' in applied
            assert 'vbapi."group_flex_schedule" key is now (group_id, groupflexschedule_key)' \
                in applied
            # group_flex_schedule's new parent, groups, is a new and empty table: enforced
            # for new writes, not for the row that predates it.
            assert ('vbapi."group_flex_schedule": foreign key to groups added, not valid for '
                    'stored rows without a parent record') in applied
            assert await migrate(dsn) == []
            assert await conn.fetchval("SELECT hipaa_code FROM vbapi.benefit") == "H1"
            assert await conn.fetchval(
                "SELECT groupflexschedule_key FROM vbapi.group_flex_schedule") == 7
            assert await conn.fetchval(
                "SELECT count(*) FROM vbapi.upsert_processed_message") == 1
            columns = await _columns(conn, "benefit_category")
            assert "description" in columns  # the parent table is now the entity's table
        finally:
            await conn.close()
