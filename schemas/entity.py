"""The declaration types for the batch endpoints of the source API.

An :class:`Entity` says everything the worker needs to know about one "Create or Update
Batch" endpoint: its JSON fields (names, types, lengths, nullability), its key, the path
template and which path parameters bind to which item fields, and the parent records that
must exist.  A :class:`Table` is a parent table with no endpoint of its own (key columns
only).  Validation models, SQL statements and table DDL are all derived from these
elsewhere (what each field kind means is one table, :mod:`schemas.kinds`); this module
is pure data and does no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from schemas.kinds import KEY_KINDS, Kind


@dataclass(frozen=True)
class Field:
    """One JSON field of an entity (or one key column of a key-only table).

    ``required`` means NOT NULL in the database: the item must carry a non-null value.
    ``nullable`` means the JSON value may be ``null``.  A field that is neither may be left
    out but not sent as null (the audit dates, whose API type is a plain ``string``).
    """

    name: str
    kind: Kind
    required: bool = False
    nullable: bool = True
    min_length: int | None = None
    max_length: int | None = None

    @property
    def column(self) -> str:
        """The column name: the JSON name lower-cased (``hipaA_Code`` -> ``hipaa_code``)."""
        return self.name.lower()

    @property
    def sql_type(self) -> str:
        """The column type (a text field with a length is a varchar of that length)."""
        return self.kind.spec.column_type(self)

    @classmethod
    def from_declaration(cls, data: dict[str, Any]) -> Field:
        required = bool(data.get("required", False))
        return cls(name=data["name"], kind=Kind(data["type"]), required=required,
                   nullable=bool(data.get("nullable", False)),
                   min_length=data.get("minLength"), max_length=data.get("maxLength"))


def text(name: str, *, required: bool = False, min_length: int | None = None,
         max_length: int | None = None) -> Field:
    """A string field; required fields are not nullable, optional ones are."""
    return Field(name, Kind.TEXT, required=required, nullable=not required,
                 min_length=min_length, max_length=max_length)


def integer(name: str, *, required: bool = False) -> Field:
    """A 32-bit signed integer field."""
    return Field(name, Kind.INTEGER, required=required, nullable=not required)


def datetime(name: str, *, required: bool = False, nullable: bool | None = None) -> Field:
    """An ISO 8601 date-time string."""
    return Field(name, Kind.DATETIME, required=required,
                 nullable=(not required) if nullable is None else nullable)


# The audit fields most entities of the API carry.  Their write rules (entry_* only on
# create, update_* on every write, defaults from the write time and the producer) live in
# the statements; here they are ordinary fields.
ENTRY_DATE = "entry_Date"
ENTRY_USER = "entry_User"
UPDATE_DATE = "update_Date"
UPDATE_USER = "update_User"


def audit_fields() -> tuple[Field, ...]:
    """``entry_Date``, ``entry_User``, ``update_Date``, ``update_User`` as the API types them."""
    return (
        datetime(ENTRY_DATE, nullable=False),
        text(ENTRY_USER, max_length=20),
        datetime(UPDATE_DATE, nullable=False),
        text(UPDATE_USER, max_length=20),
    )


@dataclass(frozen=True)
class Parent:
    """A record that must exist before an item can be written: a foreign key.

    ``fields`` are the item's JSON fields; ``columns`` the parent table's key columns they
    refer to, in the same order (by default the fields' own column names).  The parent is
    only required when every one of those fields is non-null.
    """

    table: str
    fields: tuple[str, ...]
    columns: tuple[str, ...] = ()
    via: str = "declared"       # nesting | x-references: where the importer found it

    def __post_init__(self) -> None:
        if not self.columns:
            object.__setattr__(self, "columns", tuple(f.lower() for f in self.fields))
        if len(self.columns) != len(self.fields):
            raise ValueError(f"parent {self.table}: as many columns as fields")


@dataclass(frozen=True)
class Table:
    """A parent table with no endpoint: its key columns only."""

    name: str
    columns: tuple[Field, ...]

    @property
    def key(self) -> tuple[str, ...]:
        return tuple(f.column for f in self.columns)


_PATH_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, eq=False)  # identity equality: entities are singletons, hashable
class Entity:
    """One batch endpoint: the declaration everything else is derived from.

    ``bindings`` maps a path parameter to the item field that must hold the same value;
    ``scope`` lists path parameters that name an ancestor record the model has no field
    for (neither stored nor compared).  ``model`` is the API's model name.
    """

    name: str
    table: str
    path: str
    fields: tuple[Field, ...]
    key: tuple[str, ...]
    bindings: dict[str, str] = field(default_factory=dict)
    parents: tuple[Parent, ...] = ()
    scope: tuple[str, ...] = ()
    model: str = ""

    def __post_init__(self) -> None:
        by_name = {f.name: f for f in self.fields}
        object.__setattr__(self, "_by_name", by_name)
        self._check_names(by_name)
        self._check_key(by_name)
        object.__setattr__(self, "_key_fields", tuple(by_name[k] for k in self.key))
        positions = {f.name: i for i, f in enumerate(self.fields)}
        object.__setattr__(self, "_positions", positions)
        object.__setattr__(self, "_key_positions", tuple(positions[k] for k in self.key))
        self._check_bindings(by_name)
        for parent in self.parents:
            for name in parent.fields:
                if name not in by_name:
                    raise ValueError(f"{self.name}: parent field {name!r} is not a field")
        object.__setattr__(self, "_parent_positions",
                           tuple(tuple(positions[name] for name in parent.fields)
                                 for parent in self.parents))

    def _check_names(self, by_name: dict[str, Field]) -> None:
        if len({n.lower() for n in by_name}) != len(self.fields):
            raise ValueError(f"{self.name}: field names must differ case-insensitively")
        for name in by_name:
            if not name.isidentifier():
                raise ValueError(f"{self.name}: field name {name!r} is not an identifier")

    def _check_key(self, by_name: dict[str, Field]) -> None:
        for key in self.key:
            if key not in by_name:
                raise ValueError(f"{self.name}: key field {key!r} is not a field")
            if by_name[key].kind not in KEY_KINDS:
                raise ValueError(f"{self.name}: key field {key!r} must be text, integer "
                                 f"or date-time")
            if not by_name[key].required:
                raise ValueError(f"{self.name}: key field {key!r} must be required")

    def _check_bindings(self, by_name: dict[str, Field]) -> None:
        params = _PATH_PARAM.findall(self.path)
        for param, target in self.bindings.items():
            if param not in params:
                raise ValueError(f"{self.name}: binding {param!r} is not in path {self.path!r}")
            if target not in by_name:
                raise ValueError(f"{self.name}: binding target {target!r} is not a field")
            if by_name[target].kind not in KEY_KINDS:
                raise ValueError(f"{self.name}: binding target {target!r} must be text, "
                                 f"integer or date-time")
        if set(params) - set(self.bindings) - set(self.scope):
            raise ValueError(f"{self.name}: every path parameter needs a binding")

    def field_named(self, name: str) -> Field:
        return self._by_name[name]  # type: ignore[attr-defined, no-any-return]

    @property
    def positions(self) -> dict[str, int]:
        """Each field's position in a validated row: rows are tuples of values in field
        order (worker/core/validation.py)."""
        return self._positions  # type: ignore[attr-defined, no-any-return]

    @property
    def key_positions(self) -> tuple[int, ...]:
        """The key fields' positions in a row, in key order."""
        return self._key_positions  # type: ignore[attr-defined, no-any-return]

    @property
    def parent_positions(self) -> tuple[tuple[int, ...], ...]:
        """Per parent, in ``parents`` order, its fields' positions in a row."""
        return self._parent_positions  # type: ignore[attr-defined, no-any-return]

    @property
    def key_fields(self) -> tuple[Field, ...]:
        """The key's fields, in key order (made once, in __post_init__)."""
        return self._key_fields  # type: ignore[attr-defined, no-any-return]

    @classmethod
    def from_declaration(cls, data: dict[str, Any]) -> Entity:
        return cls(
            name=data["name"], model=data.get("model", data["name"]), table=data["table"],
            path=data["path"], key=tuple(data["key"]), bindings=dict(data["bindings"]),
            scope=tuple(data.get("scope", ())),
            parents=tuple(Parent(p["table"], tuple(p["fields"]), tuple(p["columns"]),
                                 p.get("via", "declared")) for p in data["parents"]),
            fields=tuple(Field.from_declaration(f) for f in data["fields"]),
        )
