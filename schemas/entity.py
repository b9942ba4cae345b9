"""The declaration type for one batch endpoint of the source API.

An :class:`Entity` says everything the worker needs to know about one "Create or Update
Batch" endpoint: its JSON fields (names, types, lengths, nullability), its key, the path
template and which path parameters bind to which item fields, and the parent record that
must exist.  Validation models, SQL statements and table DDL are all derived from it
elsewhere; this module is pure data and does no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


class Kind(Enum):
    """The JSON type of a field, and with it the PostgreSQL column type."""

    TEXT = "text"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    DECIMAL = "numeric"
    DATETIME = "timestamptz"


@dataclass(frozen=True)
class Field:
    """One JSON field of an entity.

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
        if self.kind is Kind.TEXT and self.max_length is not None:
            return f"varchar({self.max_length})"
        return self.kind.value


def text(name: str, *, required: bool = False, min_length: int | None = None,
         max_length: int | None = None) -> Field:
    """A string field; required fields are not nullable, optional ones are."""
    return Field(name, Kind.TEXT, required=required, nullable=not required,
                 min_length=min_length, max_length=max_length)


def integer(name: str, *, required: bool = False) -> Field:
    """A 32-bit signed integer field."""
    return Field(name, Kind.INTEGER, required=required, nullable=not required)


def boolean(name: str, *, required: bool = False) -> Field:
    return Field(name, Kind.BOOLEAN, required=required, nullable=not required)


def decimal(name: str, *, required: bool = False) -> Field:
    """A finite decimal amount (a JSON number)."""
    return Field(name, Kind.DECIMAL, required=required, nullable=not required)


def datetime(name: str, *, required: bool = False, nullable: bool | None = None) -> Field:
    """An ISO 8601 date-time string."""
    return Field(name, Kind.DATETIME, required=required,
                 nullable=(not required) if nullable is None else nullable)


# The audit fields every entity of the API carries.  Their write rules (entry_* only on
# create, update_* on every write, defaults from the write time and the producer) live in
# the store; here they are ordinary fields.
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
    """A record that must exist before an item can be written.

    ``fields`` are the item's JSON fields, in the parent key's order; the parent table's
    key columns are those names lower-cased.  The parent is only required when every one
    of those fields is non-null (``Benefit.benefit_Category`` may be null).
    """

    table: str
    fields: tuple[str, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(f.lower() for f in self.fields)


_PATH_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, eq=False)  # identity equality: entities are singletons, hashable
class Entity:
    """One batch endpoint: the declaration everything else is derived from.

    ``bindings`` maps a path parameter to the item field that must hold the same value.
    """

    name: str
    table: str
    path: str
    fields: tuple[Field, ...]
    key: tuple[str, ...]
    bindings: dict[str, str] = field(default_factory=dict)
    parent: Parent | None = None

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        lowered = {n.lower() for n in names}
        if len(lowered) != len(names):
            raise ValueError(f"{self.name}: field names must differ case-insensitively")
        for name in names:
            # Also what keeps them apart from the worker's own "$..." row columns.
            if not name.isidentifier():
                raise ValueError(f"{self.name}: field name {name!r} is not an identifier")
        by_name = {f.name: f for f in self.fields}
        for key in self.key:
            if key not in by_name:
                raise ValueError(f"{self.name}: key field {key!r} is not a field")
            # Keys are echoed "as sent" in replies from the validated values, which is
            # only faithful for JSON-native types.
            if by_name[key].kind not in (Kind.TEXT, Kind.INTEGER):
                raise ValueError(f"{self.name}: key field {key!r} must be text or integer")
            if not by_name[key].required:
                raise ValueError(f"{self.name}: key field {key!r} must be required")
        params = _PATH_PARAM.findall(self.path)
        for param, target in self.bindings.items():
            if param not in params:
                raise ValueError(f"{self.name}: binding {param!r} is not in path {self.path!r}")
            if target not in by_name:
                raise ValueError(f"{self.name}: binding target {target!r} is not a field")
        if set(params) - set(self.bindings):
            raise ValueError(f"{self.name}: every path parameter needs a binding")
        if self.parent is not None:
            for name in self.parent.fields:
                if name not in by_name:
                    raise ValueError(f"{self.name}: parent field {name!r} is not a field")

    @property
    def path_params(self) -> tuple[str, ...]:
        return tuple(_PATH_PARAM.findall(self.path))

    def field_named(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)
