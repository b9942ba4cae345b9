"""Valid items generated from the declarations, and their parent records.  Pure: the
statements that create parents are returned, not run.

For any entity: :func:`make_item` builds an item whose every field holds a valid value
(keys and referring fields derived from a number, so that different numbers give different
records), :func:`path_for` fills the batch path with the item's bound values, and
:class:`Parents` plans, parents first, the inserts of every record the item's foreign keys
need.  The tests and the benchmark use them to exercise any endpoint.
"""

from __future__ import annotations

import datetime as dt
import json
import string
import zlib
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from schemas.ddl import qualified
from schemas.ddl import quote as quote_name
from schemas.entity import Entity, Field
from schemas.kinds import Kind
from schemas.registry import Registry

_DIGITS = string.digits + string.ascii_uppercase
_EPOCH = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)


def _base36(n: int) -> str:
    out = ""
    while True:
        n, digit = divmod(n, 36)
        out = _DIGITS[digit] + out
        if n == 0:
            return out


def value_for(field: Field, n: int) -> Any:
    """A valid JSON value for ``field``, different for different ``n`` as far as the
    field's length allows."""
    kind = field.kind
    if kind is Kind.TEXT:
        text = _base36(n)
        if field.max_length is not None:
            text = text[-field.max_length:]
        return text.rjust(field.min_length or 1, "0")
    if kind is Kind.INTEGER:
        return n
    if kind is Kind.BOOLEAN:
        return n % 2 == 1
    if kind is Kind.DECIMAL:
        return n + 0.25
    if kind is Kind.DATETIME:
        return (_EPOCH + dt.timedelta(minutes=n)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return [{"n": n}]


def changed_value(field: Field, value: Any) -> Any:
    """Another valid value for ``field`` than ``value``."""
    if field.kind is Kind.TEXT:
        changed = "Z" if value[:1] != "Z" else "Y"
        return changed + value[1:]
    if field.kind is Kind.BOOLEAN:
        return not value
    if field.kind is Kind.DATETIME:
        return "2030-06-15T12:00:00Z"
    if field.kind is Kind.OBJECTS:
        return [{"changed": True}]
    return value + 1


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
    fixed |= {"entry_Date", "entry_User", "update_Date", "update_User"}
    for field in entity.fields:
        if field.name not in fixed:
            return field
    return None


def to_database(field: Field, value: Any) -> Any:
    """A JSON value as asyncpg takes it for the field's column."""
    if value is None:
        return None
    if field.kind is Kind.DATETIME:  # without an offset: UTC, as the worker takes it
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    if field.kind is Kind.DECIMAL:
        return Decimal(str(value))
    if field.kind is Kind.OBJECTS:
        return json.dumps(value)
    return value


class Parents:
    """Inserts the parent records items need, parents of parents first."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.by_table = {e.table: e for e in registry.entities}
        self.key_only = {t.name: t for t in registry.tables}
        self.made: set[tuple[str, tuple[Any, ...]]] = set()
        self.statements: list[tuple[str, list[Any]]] = []

    def need(self, entity: Entity, item: dict[str, Any], depth: int = 0) -> None:
        """Plan the parents of one item (and theirs); :meth:`insert` writes them."""
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
