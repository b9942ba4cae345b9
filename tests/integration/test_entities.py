"""Every entity end to end through the real broker and database: create, update, invalid
items, path mismatch, missing parent, duplicates within a batch, composite keys."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from schemas.registry import default_registry
from tests.support import samples
from tests.support.configs import make_settings
from tests.support.producer import Producer
from tests.support.running import running
from tests.support.samples import make_item, path_for
from worker.service import Worker


@dataclass(frozen=True)
class Case:
    entity: str
    path: str
    table: str
    make: Callable[..., dict[str, Any]]
    first: Any            # argument to make() for a first key
    second: Any           # ... and a second one
    key_fields: tuple[str, ...]
    changed: tuple[str, Any]          # a non-key field and a new value for an update
    mismatch: tuple[str, Any, str]    # field, value, parameter it must match
    orphan: dict[str, Any] | None     # fields that point to a missing parent


CASES = [
    Case("Benefit", samples.BENEFIT_PATH, "benefit", samples.benefit, "B1", "B2",
         ("benefit_Code",), ("benefit_Description", "changed"), ("", None, ""),
         {"benefit_Category": "NOPE"}),
    Case("ArmorCodeExCode", samples.ARMOR_PATH, "armor_code_ex_code", samples.armor, 1, 2,
         ("armorCodeExCode_Key",), ("ex_Code", "E9"), ("", None, ""), None),
    Case("GroupFlexSchedule", samples.FLEX_SCHEDULE_PATH, "group_flex_schedule",
         samples.flex_schedule, 1, 2, ("group_ID", "groupFlexSchedule_Key"),
         ("schedule_Type", "CUSTOM"),
         ("group_ID", "G2", "groupID"), {"plan_ID": "P9"}),
    Case("GroupPlanYear", samples.PLAN_YEAR_PATH, "group_plan_year", samples.plan_year,
         "CY2024", "CY2025", ("group_ID", "division_ID", "plan_Year"), ("plan_Type", "X"),
         ("division_ID", "D2", "divisionID"), None),
    Case("SubscriberFlexExported", samples.EXPORTS_PATH, "subscriber_flex_exported",
         samples.export, 1, 2,
         ("subscriber_ID", "group_ID", "plan_ID", "calendar_Year", "effective_Date",
          "subscriberFlexExported_Key"), ("export_Status", "SENT"),
         ("group_ID", "G2", "groupID"), None),
]
IDS = [c.entity for c in CASES]


@pytest.fixture
async def parents(db: asyncpg.Connection) -> None:
    await samples.create_parents(db)


def key_of(case: Case, item: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": item[k]} for k in case.key_fields]


@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_create_update_and_item_errors(case: Case, parents: None, worker: Worker,
                                             producer: Producer,
                                             db: asyncpg.Connection) -> None:
    first, second = case.make(case.first), case.make(case.second)
    created = await producer.call(case.path, [first, second], routing_key=case.entity)
    assert created.status == 207
    assert created.headers["path"] == case.path
    assert created.headers["vbasoftware-database"] == "demo"
    assert created.body["error"] is None and created.body["debug"]["activityID"]
    assert created.body["data"] == [
        {"id": key_of(case, first), "status": 201, "body": "Created"},
        {"id": key_of(case, second), "status": 201, "body": "Created"},
    ]

    field, value = case.changed
    invalid = case.make(case.second) | {"unknown_Field": 1}
    updated = await producer.call(case.path, [case.make(case.first, **{field: value}), invalid],
                                  routing_key=case.entity)
    assert [d["status"] for d in updated.body["data"]] == [200, 400]
    assert updated.body["data"][0]["body"] == "Updated"
    assert updated.body["data"][1]["body"] == "unknown_Field: unknown field"
    column = field.lower()
    rows = await db.fetch(f"SELECT {column} FROM vbapi.{case.table} ORDER BY 1 NULLS FIRST")
    assert sorted(str(r[column]) for r in rows) == sorted([str(value), str(second.get(field))])


@pytest.mark.parametrize("case", [c for c in CASES if c.mismatch[0]],
                         ids=[c.entity for c in CASES if c.mismatch[0]])
async def test_path_mismatch(case: Case, parents: None, worker: Worker,
                             producer: Producer, db: asyncpg.Connection) -> None:
    field, value, param = case.mismatch
    reply = await producer.call(case.path, [case.make(case.first, **{field: value}),
                                            case.make(case.second)])
    (bad, good) = reply.body["data"]
    assert bad["status"] == 400
    assert bad["body"].startswith(f"{field}: '{value}' does not match path {param} ")
    assert good["status"] == 201
    assert await db.fetchval(f"SELECT count(*) FROM vbapi.{case.table}") == 1


@pytest.mark.parametrize("case", [c for c in CASES if c.entity != "ArmorCodeExCode"],
                         ids=[c.entity for c in CASES if c.entity != "ArmorCodeExCode"])
async def test_missing_parent_is_404_naming_parent_and_key(case: Case, worker: Worker,
                                                           producer: Producer,
                                                           db: asyncpg.Connection) -> None:
    # No parents were created in this database.
    item = case.make(case.first, **(case.orphan or {}))
    reply = await producer.call(case.path, [item])
    (answer,) = reply.body["data"]
    assert answer["status"] == 404
    assert answer["body"].startswith("parent ")
    assert "not found" in answer["body"]
    assert await db.fetchval(f"SELECT count(*) FROM vbapi.{case.table}") == 0


@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_duplicates_in_one_batch_apply_in_order(case: Case, parents: None,
                                                      worker: Worker, producer: Producer,
                                                      db: asyncpg.Connection) -> None:
    field, value = case.changed
    items = [case.make(case.first), case.make(case.first, **{field: value}),
             case.make(case.second)]
    reply = await producer.call(case.path, items)
    assert [d["status"] for d in reply.body["data"]] == [201, 200, 201]
    assert [d["body"] for d in reply.body["data"]] == ["Created", "Updated", "Created"]
    key_column = case.key_fields[-1].lower()
    stored = await db.fetchval(
        f"SELECT {field.lower()} FROM vbapi.{case.table} WHERE {key_column} = $1", case.first)
    assert stored == value


async def test_composite_key_distinguishes_rows(parents: None, worker: Worker,
                                                producer: Producer,
                                                db: asyncpg.Connection) -> None:
    await samples.create_parents(db, ("GroupPlanYear", samples.plan_year(division_ID="D2")))
    first = await producer.call(samples.PLAN_YEAR_PATH,
                                [samples.plan_year("CY2024"), samples.plan_year("CY2025")])
    other_division = "/groups/G1/divisions/D2/plan-years-batch"
    second = await producer.call(other_division,
                                 [samples.plan_year("CY2024", division_ID="D2")])
    assert [d["status"] for d in first.body["data"]] == [201, 201]
    assert [d["status"] for d in second.body["data"]] == [201]
    assert second.body["data"][0]["id"] == [
        {"key": "group_ID", "value": "G1"}, {"key": "division_ID", "value": "D2"},
        {"key": "plan_Year", "value": "CY2024"}]
    assert await db.fetchval("SELECT count(*) FROM vbapi.group_plan_year") == 3


async def test_audit_fields_follow_create_and_update_rules(parents: None, worker: Worker,
                                                           producer: Producer,
                                                           db: asyncpg.Connection) -> None:
    await producer.call(samples.BENEFIT_PATH, [samples.benefit("B1")])
    await producer.call(samples.BENEFIT_PATH, [samples.benefit(
        "B2", entry_User="alice", entry_Date="2020-01-01T00:00:00Z")])
    created = await db.fetchrow("SELECT * FROM vbapi.benefit WHERE benefit_code = 'B1'")
    assert created["entry_date"] is not None and created["update_date"] is not None
    assert created["entry_user"] is None  # no user_id on the message
    assert created["upsert_message_id"] is not None and created["upsert_source_ts"] is not None
    explicit = await db.fetchrow("SELECT * FROM vbapi.benefit WHERE benefit_code = 'B2'")
    assert explicit["entry_user"] == "alice"
    assert explicit["entry_date"].year == 2020

    await producer.call(samples.BENEFIT_PATH, [samples.benefit(
        "B2", entry_User="mallory", entry_Date="2024-06-01T00:00:00Z", update_User="bob")])
    updated = await db.fetchrow("SELECT * FROM vbapi.benefit WHERE benefit_code = 'B2'")
    assert updated["entry_user"] == "alice"  # never changed by an update
    assert updated["entry_date"] == explicit["entry_date"]
    assert updated["update_user"] == "bob"
    assert updated["update_date"] >= explicit["update_date"]


async def test_numbers_and_datetimes_are_stored_exactly(parents: None, worker: Worker,
                                                        producer: Producer,
                                                        db: asyncpg.Connection) -> None:
    item = samples.export(export_Amount=1234567.89, export_Date="2024-03-04T05:06:07+02:00")
    reply = await producer.call(samples.EXPORTS_PATH, [item])
    assert reply.body["data"][0]["status"] == 201
    row = await db.fetchrow("SELECT export_amount, export_date FROM vbapi.subscriber_flex_exported")
    assert str(row["export_amount"]) == "1234567.89"
    assert row["export_date"].isoformat() == "2024-03-04T03:06:07+00:00"


async def test_datetimes_without_an_offset_are_utc_whatever_the_session_time_zone(
        parents: None, vhost: str, dsn: str, producer: Producer,
        db: asyncpg.Connection) -> None:
    # Compared date-times (the key, the path binding) are made UTC in Python; the others
    # are written as UTC by the JSON writer: both must mean UTC, not the session's zone.
    settings = make_settings(vhost, {"demo": {"dsn": f"{dsn}?TimeZone=America/New_York"}})
    item = samples.export(export_Date="2024-03-04T05:06:07",
                          effective_Date="2024-01-01T00:00:00")
    async with running(settings):
        reply = await producer.call(samples.EXPORTS_PATH, [item])
    assert reply.body["data"][0]["status"] == 201, reply.body
    row = await db.fetchrow("SELECT export_date, effective_date "
                            "FROM vbapi.subscriber_flex_exported")
    assert row["export_date"].isoformat() == "2024-03-04T05:06:07+00:00"
    assert row["effective_date"].isoformat() == "2024-01-01T00:00:00+00:00"


async def test_an_array_of_objects_is_checked_and_stored_as_jsonb(
        worker: Worker, producer: Producer, db: asyncpg.Connection) -> None:
    """The API's one array field (Criteria.criteriaDetails): objects only, kept as sent."""
    entity = default_registry().by_name("Criteria")
    base = make_item(entity, 77, required_only=True)
    details = [{"field": "Age", "from": 1, "nested": {"ok": True}}, {}]
    good = {**base, "criteriaDetails": details}
    bad = {**base, "criteria_Key": base["criteria_Key"] + 1, "criteriaDetails": [1, "two"]}
    null = {**base, "criteria_Key": base["criteria_Key"] + 2, "criteriaDetails": None}
    reply = await producer.call(path_for(entity, good), [good, bad, null],
                                routing_key=entity.name)
    (created, refused, created_null) = reply.body["data"]
    assert created["status"] == 201 and created_null["status"] == 201
    assert refused["status"] == 400
    assert refused["body"].startswith("criteriaDetails.0: Input should be an object")
    stored = dict(await db.fetch("SELECT criteria_key, criteriadetails FROM vbapi.criteria"))
    assert json.loads(stored[good["criteria_Key"]]) == details
    assert stored[null["criteria_Key"]] is None  # SQL NULL, not a JSON null
    assert await db.fetchval("SELECT jsonb_typeof(criteriadetails) FROM vbapi.criteria "
                             "WHERE criteria_key = $1", good["criteria_Key"]) == "array"


async def test_a_nul_nested_in_an_array_of_objects_is_a_400_naming_the_field(
        worker: Worker, producer: Producer, db: asyncpg.Connection) -> None:
    """PostgreSQL's jsonb holds no NUL: one nested in a value or a key is the item's own
    400, found before the write, and the other items are stored as usual."""
    entity = default_registry().by_name("Criteria")
    base = make_item(entity, 90, required_only=True)
    key = base["criteria_Key"]
    in_value = {**base, "criteriaDetails": [{"field": {"deep": ["a\u0000b"]}}]}
    in_key = {**base, "criteria_Key": key + 1, "criteriaDetails": [{"x\u0000": 1}]}
    good = {**base, "criteria_Key": key + 2, "criteriaDetails": [{"field": "Age"}]}
    reply = await producer.call(path_for(entity, good), [in_value, in_key, good],
                                routing_key=entity.name)
    statuses = [(item["status"], item["body"]) for item in reply.body["data"]]
    assert statuses == [(400, "criteriaDetails: must not contain a NUL character"),
                        (400, "criteriaDetails: must not contain a NUL character"),
                        (201, "Created")]
    assert [r[0] for r in await db.fetch("SELECT criteria_key FROM vbapi.criteria")] == [key + 2]
