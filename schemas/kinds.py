"""The field kinds, and everything each one means, in one table.

A kind is the JSON type of a field as the declarations spell it.  Everything derived from
a field's kind is one row of :data:`KINDS`: the OpenAPI property the importer maps to it,
its Python type for validation and its type for the fast reader, its column type and the
type its values are sent to PostgreSQL as, its JSON Schema, how its values are compared
(as a key, a path parameter, a parent key) and echoed, and the sample values the tests and
the benchmark write.  Nothing elsewhere asks which kind a field is: it asks the kind's
row.  Adding a kind is adding an enum member and its row; a member without a row fails at
import, never silently at validation or write time.
"""

from __future__ import annotations

import datetime as dt
import json
import string
import sys
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from pydantic import Field as PydanticField
from pydantic import StringConstraints

if TYPE_CHECKING:
    from schemas.entity import Field

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


class Kind(Enum):
    """The JSON type of a field, as the declarations spell it."""

    TEXT = "string"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    DECIMAL = "number"
    DATETIME = "date-time"
    OBJECTS = "array"          # an array of JSON objects, stored as jsonb

    @property
    def spec(self) -> KindSpec:
        return KINDS[self]


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True, kw_only=True)
class KindSpec:
    """What one kind means to the importer, validation, storage, the contract, routing
    and the samples."""

    # -- the declarations ------------------------------------------------------------
    # The OpenAPI property the importer (schemas/importer/) declares a field of this kind
    # for: what the property must say.  Of the rows a property matches, the one that asks
    # the most of it wins (a string with format date-time is a date-time, not text).
    openapi: dict[str, Any]

    # -- reading -------------------------------------------------------------------------
    # The Python type pydantic validates a value of this kind as (strictly).
    python_type: Callable[[Field], Any]
    # The type the fast reader (schemas/fast.py) reads a value of this kind as: accepting
    # only values pydantic accepts as python_type, as the same Python values.  None: no
    # fast reader for an entity with a field of this kind (pydantic reads its bodies).
    fast_type: Callable[[Field], Any] | None
    # Whether msgspec rounds a fraction of a second beyond microseconds where pydantic
    # truncates it: the fast reader leaves a body that may hold one to pydantic.
    rounds_fractions: bool = False
    # The fewest bytes a valid JSON value of the field takes (never more: the bound it
    # makes only ever asks for a count the fast reader could have skipped).
    min_json_bytes: Callable[[Field], int]

    # -- storage -------------------------------------------------------------------------
    # The column type of the field.
    column_type: Callable[[Field], str]
    # The type the worker's values are read as by PostgreSQL: what a value of the JSON
    # rows is cast to, or the element type of an unnest() array.
    wire_type: str
    # How the upsert reads a value of this kind from element {i} of {row}, a row of the
    # JSON array it is sent (worker/store/statements.py): by default its text, cast.
    from_json: str = "({row}->>{i})::{wire_type}"

    # -- the contract --------------------------------------------------------------------
    json_schema: dict[str, Any]

    # -- comparison and normalisation ----------------------------------------------------
    # Whether a value can be part of a key (compared, and echoed in replies).
    key: bool = False
    # A path parameter bound to a field of this kind, from its text; raises ValueError.
    parse_param: Callable[[str], Any]
    # A valid value of a compared field (key, path binding, parent key) as PostgreSQL
    # compares it; None: as validated.
    compared_as: Callable[[Any], Any] | None = None
    # Whether a key of this kind is echoed in replies as the item's JSON value, not as the
    # Python value it was read as.
    echoed_as_sent: bool = False

    # -- samples (tests/support/samples.py, the benchmark) -------------------------------
    # A valid JSON value of the field, different for different n as far as the field's
    # length allows.
    sample: Callable[[Field, int], Any]
    # Another valid JSON value than the one given.
    changed: Callable[[Any], Any]
    # A valid JSON value as asyncpg takes it for the field's column.
    database_value: Callable[[Any], Any] = _same

    def read_from_json(self, row: str, i: int) -> str:
        """SQL reading this kind's value from element ``i`` of ``row`` (JSON)."""
        return self.from_json.format(row=row, i=i, wire_type=self.wire_type)


# --- text -------------------------------------------------------------------------------

def _text(field: Field) -> Any:
    return Annotated[str, StringConstraints(min_length=field.min_length,
                                            max_length=field.max_length)]


def _fast_text(field: Field) -> Any:
    return Annotated[str, msgspec.Meta(min_length=field.min_length,
                                       max_length=field.max_length)]


def _text_column(field: Field) -> str:
    return "text" if field.max_length is None else f"varchar({field.max_length})"


_DIGITS = string.digits + string.ascii_uppercase


def _base36(n: int) -> str:
    out = ""
    while True:
        n, digit = divmod(n, 36)
        out = _DIGITS[digit] + out
        if n == 0:
            return out


def _sample_text(field: Field, n: int) -> str:
    text = _base36(n)
    if field.max_length is not None:
        text = text[-field.max_length:]
    return text.rjust(field.min_length or 1, "0")


def _changed_text(value: str) -> str:
    return ("Z" if value[:1] != "Z" else "Y") + value[1:]


# --- booleans ---------------------------------------------------------------------------

def _parse_bool(raw: str) -> bool:
    try:
        return {"true": True, "false": False}[raw.lower()]
    except KeyError:
        raise ValueError(f"not a boolean: {raw!r}") from None


# --- date-times -------------------------------------------------------------------------

def _as_utc(value: dt.datetime) -> dt.datetime:
    """A date-time without an offset is taken as UTC (so it compares as it is stored)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _parse_datetime(raw: str) -> dt.datetime:
    # Path parameters are lenient: a bare date means midnight, no offset means UTC.
    return _as_utc(dt.datetime.fromisoformat(raw))


_EPOCH = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)


def _sample_datetime(_: Field, n: int) -> str:
    return (_EPOCH + dt.timedelta(minutes=n)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _database_datetime(value: str) -> dt.datetime:
    return _as_utc(dt.datetime.fromisoformat(value.replace("Z", "+00:00")))


# --- arrays of objects ------------------------------------------------------------------

def _no_param(raw: str) -> Any:
    raise ValueError("a path parameter cannot hold an array of objects")


# --- the same for every field of a kind -------------------------------------------------

def _column(sql_type: str) -> Callable[[Field], str]:
    return lambda _: sql_type


def _bytes(count: int) -> Callable[[Field], int]:
    return lambda _: count


KINDS: dict[Kind, KindSpec] = {
    Kind.TEXT: KindSpec(
        openapi={"type": "string"},
        python_type=_text, fast_type=_fast_text,
        # quotes, and a byte per code point at least
        min_json_bytes=lambda field: 2 + (field.min_length or 0),
        column_type=_text_column, wire_type="text",
        json_schema={"type": "string"},
        key=True, parse_param=str,
        sample=_sample_text, changed=_changed_text),
    Kind.INTEGER: KindSpec(
        openapi={"type": "integer"},
        python_type=lambda _: Annotated[int, PydanticField(ge=INT32_MIN, le=INT32_MAX)],
        fast_type=lambda _: Annotated[int, msgspec.Meta(ge=INT32_MIN, le=INT32_MAX)],
        min_json_bytes=_bytes(1),  # a digit
        column_type=_column("integer"), wire_type="integer",
        json_schema={"type": "integer", "minimum": INT32_MIN, "maximum": INT32_MAX},
        key=True, parse_param=int,
        sample=lambda _, n: n, changed=lambda value: value + 1),
    Kind.BOOLEAN: KindSpec(
        openapi={"type": "boolean"},
        python_type=lambda _: bool, fast_type=lambda _: bool,
        min_json_bytes=_bytes(4),  # true
        column_type=_column("boolean"), wire_type="boolean",
        json_schema={"type": "boolean"},
        parse_param=_parse_bool,
        sample=lambda _, n: n % 2 == 1, changed=lambda value: not value),
    Kind.DECIMAL: KindSpec(
        openapi={"type": "number"},
        # float, not Decimal: strict Decimal accepts JSON strings, which the API does not.
        python_type=lambda _: Annotated[float, PydanticField(allow_inf_nan=False)],
        # A number beyond the largest float reads as infinity, which the bounds refuse
        # as allow_inf_nan=False does.
        fast_type=lambda _: Annotated[float, msgspec.Meta(ge=-sys.float_info.max,
                                                          le=sys.float_info.max)],
        min_json_bytes=_bytes(1),  # a digit
        column_type=_column("numeric"),
        # Amounts arrive as JSON numbers (floats); float8 -> numeric keeps 15 significant
        # digits, so 1234567.89 is stored as 1234567.89, not as the float's binary expansion.
        wire_type="float8",
        json_schema={"type": "number"},
        parse_param=float,
        sample=lambda _, n: n + 0.25, changed=lambda value: value + 1,
        database_value=lambda value: Decimal(str(value))),
    Kind.DATETIME: KindSpec(
        openapi={"type": "string", "format": "date-time"},
        python_type=lambda _: dt.datetime, fast_type=lambda _: dt.datetime,
        rounds_fractions=True,
        min_json_bytes=_bytes(2),  # counted as its quotes alone
        column_type=_column("timestamptz"), wire_type="timestamptz",
        json_schema={"type": "string", "format": "date-time"},
        # Compared without an offset as UTC, as the database stores it; others stay as
        # sent, and the writer sends those as UTC (orjson's OPT_NAIVE_UTC).  A key is
        # echoed as its text, not as the instant it was parsed to.
        key=True, parse_param=_parse_datetime, compared_as=_as_utc, echoed_as_sent=True,
        sample=_sample_datetime, changed=lambda _: "2030-06-15T12:00:00Z",
        database_value=_database_datetime),
    Kind.OBJECTS: KindSpec(
        openapi={"type": "array", "items": {"type": "object"}},
        python_type=lambda _: list[dict[str, Any]],
        # None: msgspec nests arrays and objects deeper than pydantic's JSON parser allows,
        # so only pydantic can say which of those bodies are valid.
        fast_type=None,
        min_json_bytes=_bytes(2),  # []
        column_type=_column("jsonb"), wire_type="jsonb",
        # Stays jsonb; a JSON null is made SQL NULL.
        from_json="NULLIF({row}->{i}, 'null')",
        json_schema={"type": "array", "items": {"type": "object"}},
        parse_param=_no_param,
        sample=lambda _, n: [{"n": n}], changed=lambda _: [{"changed": True}],
        database_value=json.dumps),
}
# Every kind must have its row: a kind missing here fails at import.
assert set(KINDS) == set(Kind), f"kinds without a row: {set(Kind) - set(KINDS)}"

# Kinds whose values are echoed in replies and compared as keys.
KEY_KINDS = tuple(kind for kind, spec in KINDS.items() if spec.key)
