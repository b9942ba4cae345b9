"""Valid sample items and their parent records, for the tests and the benchmark.

- Generated, for any entity: :func:`make_item` builds an item whose every field holds a
  valid value (keys and referring fields derived from a number, so that different numbers
  give different records), :func:`path_for` fills the batch path with the item's bound
  values, and :class:`Parents` plans, parents first, the inserts of every record the
  item's foreign keys need (the statements are returned, not run).  Every value comes from
  its kind's row (schemas/kinds.py: sample, changed, database_value).
- Written by hand, for five entities the tests name: :func:`benefit`, :func:`armor`,
  :func:`flex_schedule`, :func:`plan_year`, :func:`export` and their paths.
- Run against a database: :func:`insert_parents` runs the planned inserts,
  :func:`create_parents` those of the hand-written samples.
"""

from __future__ import annotations

import zlib
from typing import Any
from urllib.parse import quote

import asyncpg

from schemas.ddl import qualified
from schemas.ddl import quote as quote_name
from schemas.entity import ENTRY_DATE, ENTRY_USER, UPDATE_DATE, UPDATE_USER, Entity, Field
from schemas.registry import Registry, default_registry

# --- generated, for any entity ------------------------------------------------------------


def value_for(field: Field, n: int) -> Any:
    """A valid JSON value for ``field``, different for different ``n`` as far as the
    field's length allows."""
    return field.kind.spec.sample(field, n)


def changed_value(field: Field, value: Any) -> Any:
    """Another valid value for ``field`` than ``value``."""
    return field.kind.spec.changed(value)


def make_item(entity: Entity, n: int, *, required_only: bool = False) -> dict[str, Any]:
    """An item of ``entity`` with every field (or only the required ones) set."""
    return {f.name: value_for(f, n) for f in entity.fields
            if f.required or not required_only}


def path_for(entity: Entity, item: dict[str, Any]) -> str:
    """The batch path with every bound parameter set to the item's value."""
    path = entity.path
    for param in entity.scope:
        path = path.replace(f"{{{param}}}", "1")
    for param, name in entity.bindings.items():
        path = path.replace(f"{{{param}}}", quote(str(item[name]), safe=":"))
    return path


def updatable_field(entity: Entity) -> Field | None:
    """A field an update can change: not part of the key, a binding or a parent."""
    fixed = set(entity.key) | set(entity.bindings.values())
    fixed |= {name for parent in entity.parents for name in parent.fields}
    fixed |= {ENTRY_DATE, ENTRY_USER, UPDATE_DATE, UPDATE_USER}
    for field in entity.fields:
        if field.name not in fixed:
            return field
    return None


def to_database(field: Field, value: Any) -> Any:
    """A JSON value as asyncpg takes it for the field's column."""
    return None if value is None else field.kind.spec.database_value(value)


class Parents:
    """Inserts the parent records items need, parents of parents first."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.by_table = {e.table: e for e in registry.entities}
        self.key_only = {t.name: t for t in registry.tables}
        self.made: set[tuple[str, tuple[Any, ...]]] = set()
        self.statements: list[tuple[str, list[Any]]] = []

    def need(self, entity: Entity, item: dict[str, Any], depth: int = 0) -> None:
        """Plan the parents of one item (and theirs); :meth:`take` hands them out."""
        if depth > 12:
            raise RecursionError(f"parents of {entity.name} nest too deep (a cycle?)")
        for parent in entity.parents:
            values = [item.get(name) for name in parent.fields]
            if None in values:
                continue
            fields = [entity.field_named(name) for name in parent.fields]
            key = tuple(to_database(f, v) for f, v in zip(fields, values, strict=True))
            if (parent.table, key) in self.made:
                continue
            self.made.add((parent.table, key))
            target = self.by_table.get(parent.table)
            if target is None:
                self._plan_row(parent.table, list(parent.columns), list(key))
                continue
            # A record of the parent entity: its key from the item, the rest required
            # fields only, numbered after the key so different parents differ.
            n = zlib.crc32(repr((parent.table, key)).encode()) % 10**6 + 10**6
            row = make_item(target, n, required_only=True)
            for column, value in zip(parent.columns, values, strict=True):
                name = next(f.name for f in target.fields if f.column == column)
                row[name] = value
            self.need(target, row, depth + 1)
            self._plan_row(target.table, [f.column for f in target.fields if f.name in row],
                           [to_database(f, row[f.name]) for f in target.fields
                            if f.name in row])

    def _plan_row(self, table: str, columns: list[str], values: list[Any]) -> None:
        names = ", ".join(quote_name(c) for c in columns)
        marks = ", ".join(f"${i + 1}" for i in range(len(values)))
        self.statements.append((f"INSERT INTO {qualified(table)} ({names}) VALUES ({marks}) "
                                f"ON CONFLICT DO NOTHING", values))

    def take(self) -> list[tuple[str, list[Any]]]:
        """The inserts planned so far, in order (parents before children); forgotten here."""
        planned, self.statements = self.statements, []
        return planned


# --- written by hand, for five entities ---------------------------------------------------

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


# --- run against a database ---------------------------------------------------------------


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
