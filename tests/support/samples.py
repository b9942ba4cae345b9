"""Valid sample items and their parents for every entity, shared by the tests (and the
benchmark, which writes the parents of its widest entity's items the same way)."""

from __future__ import annotations

from typing import Any

import asyncpg

from schemas.registry import default_registry
from schemas.samples import Parents

BENEFIT_PATH = "/benefits-batch"
ARMOR_PATH = "/armor-code-ex-codes-batch"
FLEX_SCHEDULE_PATH = "/groups/G1/flex-schedules-batch"
PLAN_YEAR_PATH = "/groups/G1/divisions/D1/plan-years-batch"
EXPORTS_PATH = "/subscribers/S1/groups/G1/plans/P1/flexes/2024/2024-01-01/exports-batch"


def benefit(code: str = "B1", **fields: Any) -> dict[str, Any]:
    return {"benefit_Code": code, "allow_Flat_Tax": True, "medicare": "N", "pend_Flag": "N",
            **fields}


def armor(key: int = 1, **fields: Any) -> dict[str, Any]:
    return {"armorCodeExCode_Key": key, "armor_Code": "A1", "ex_Code": "E1", **fields}


def flex_schedule(key: int = 1, **fields: Any) -> dict[str, Any]:
    return {"groupFlexSchedule_Key": key, "calendar_Year": "2024", "group_ID": "G1",
            "plan_ID": "P1", "schedule_Date": "2024-02-01T00:00:00",
            "schedule_Type": "MONTHLY", **fields}


def plan_year(plan_year: str = "CY2024", **fields: Any) -> dict[str, Any]:
    return {"group_ID": "G1", "division_ID": "D1", "plan_Year": plan_year,
            "qtr4_Accum": False, "qtr4_Deductible": False, "qtr4_Member": False,
            "qtr4_Out_Of_Pocket": False, "qtr4_Subscriber": False, **fields}


def export(key: int = 1, **fields: Any) -> dict[str, Any]:
    return {"subscriberFlexExported_Key": key, "calendar_Year": "2024",
            "effective_Date": "2024-01-01T00:00:00", "group_ID": "G1", "plan_ID": "P1",
            "subscriber_ID": "S1", "export_Amount": 12.5, **fields}


async def insert_parents(conn: asyncpg.Connection, parents: Parents) -> None:
    """Run the parent inserts planned so far, parents before children, in one transaction."""
    async with conn.transaction():
        for statement, values in parents.take():
            await conn.execute(statement, *values)


async def create_parents(db: asyncpg.Connection, *items: tuple[str, dict[str, Any]]) -> None:
    """Insert the parent records the samples above refer to (and theirs), plus those of
    any further (entity name, item) given."""
    registry = default_registry()
    parents = Parents(registry)
    samples = [("Benefit", benefit(benefit_Category="MED")), ("GroupFlexSchedule", flex_schedule()),
               ("GroupPlanYear", plan_year()), ("SubscriberFlexExported", export()), *items]
    for name, item in samples:
        parents.need(registry.by_name(name), item)
    await insert_parents(db, parents)
