"""All declared entities, and routing from a request path to its entity.

The declarations are data: ``schemas/vbapi.json``, written by ``upsert-worker schemas
import``.  A :class:`Registry` checks them as a whole when it is made (every parent names a
declared table by its key, no table is declared twice), so a bad declaration stops the
worker at start, never at write time.  Routing walks a tree of path segments: its cost
depends on the path's length, not on the number of entities.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import orjson

from schemas.entity import Entity, Field, Parent, Table

DECLARATIONS = Path(__file__).with_name("vbapi.json")
_PARAM = "{}"


@dataclass(frozen=True)
class Route:
    """A path matched to its entity, with the path parameters decoded."""

    entity: Entity
    params: dict[str, str]


def _segments(path: str) -> list[str]:
    path = path.split("?", 1)[0]
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    # Split before decoding, so an encoded "/" (%2F) stays inside its segment.
    return [unquote(part) for part in path.split("/")]


class _Node:
    __slots__ = ("children", "entity")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.entity: Entity | None = None


class Registry:
    """Entities by name and by path template, and the key-only parent tables."""

    def __init__(self, entities: tuple[Entity, ...], tables: tuple[Table, ...] = ()) -> None:
        self.entities = entities
        self.tables = tables
        self._by_name = {e.name: e for e in entities}
        if len(self._by_name) != len(entities):
            raise ValueError("entity names must be unique")
        self._root = _Node()
        for entity in entities:
            self._add_route(entity)
        self._check_tables()

    def _add_route(self, entity: Entity) -> None:
        node = self._root
        for segment in entity.path.split("/"):
            param = segment.startswith("{") and segment.endswith("}")
            node = node.children.setdefault(_PARAM if param else segment, _Node())
        if node.entity is not None:
            raise ValueError(f"paths of {node.entity.name} and {entity.name} are the same")
        node.entity = entity

    def _check_tables(self) -> None:
        """Raise ValueError where a table is declared twice or a parent does not name a
        table's key (with columns of the same types)."""
        tables: dict[str, tuple[tuple[str, ...], dict[str, Field]]] = {}
        for entity in self.entities:
            if entity.table in tables:
                raise ValueError(f"table {entity.table} is declared twice")
            tables[entity.table] = (tuple(f.column for f in entity.key_fields),
                                    {f.column: f for f in entity.fields})
        for table in self.tables:
            if table.name in tables:
                raise ValueError(f"parent table {table.name} is declared twice (or is an "
                                 f"entity's table)")
            tables[table.name] = (table.key, {f.column: f for f in table.columns})
        for entity in self.entities:
            for parent in entity.parents:
                _check_parent(entity, parent, tables)

    def by_name(self, name: str) -> Entity:
        return self._by_name[name]

    def route(self, path: str) -> Route | None:
        """The entity whose template matches ``path``, or None."""
        if not path.startswith("/"):
            return None
        segments = _segments(path)
        found = self._walk(self._root, segments, 0, [])
        if found is None:
            return None
        entity, values = found
        names = [s[1:-1] for s in entity.path.split("/") if s.startswith("{")]
        return Route(entity, dict(zip(names, values, strict=True)))

    def _walk(self, node: _Node, segments: list[str], at: int,
              values: list[str]) -> tuple[Entity, list[str]] | None:
        if at == len(segments):
            return (node.entity, values) if node.entity is not None else None
        segment = segments[at]
        literal = node.children.get(segment)
        if literal is not None:  # a literal segment wins over a parameter
            found = self._walk(literal, segments, at + 1, values)
            if found is not None:
                return found
        param = node.children.get(_PARAM)
        if param is not None and segment:
            return self._walk(param, segments, at + 1, [*values, segment])
        return None


def _check_parent(entity: Entity, parent: Parent,
                  tables: dict[str, tuple[tuple[str, ...], dict[str, Field]]]) -> None:
    """Raise ValueError where ``parent`` does not name a declared table's key (of the
    same kinds as the fields that refer to it)."""
    known = tables.get(parent.table)
    if known is None:
        raise ValueError(f"{entity.name}: parent table {parent.table} is not declared")
    key, columns = known
    if tuple(parent.columns) != key:
        raise ValueError(f"{entity.name}: parent {parent.table}{parent.columns} "
                         f"is not that table's key {key}")
    for name, column in zip(parent.fields, parent.columns, strict=True):
        if entity.field_named(name).kind is not columns[column].kind:
            raise ValueError(f"{entity.name}: {name} and {parent.table}.{column} "
                             f"are of different types")


def registry_from_declarations(data: dict[str, Any]) -> Registry:
    """A registry from the parsed declarations file."""
    entities = tuple(Entity.from_declaration(e) for e in data["entities"])
    tables = tuple(Table(name, tuple(Field.from_declaration({**c, "required": True})
                                     for c in t["columns"]))
                   for name, t in data.get("tables", {}).items())
    return Registry(entities, tables)


def load_declarations(path: Path = DECLARATIONS) -> Registry:
    return registry_from_declarations(orjson.loads(path.read_bytes()))


@cache
def default_registry() -> Registry:
    return load_declarations()
