"""The field kinds, and everything each one means, in one table.

A kind is the JSON type of a field as the declarations spell it.  Everything derived from
a field's kind (its Python type for validation, its column type, the type its values are
sent to PostgreSQL as, its JSON Schema, how a path parameter of that kind is parsed) is
one row of :data:`KINDS`.  Adding a kind is adding an enum member and its row; a member
without a row fails at import, never silently at validation or write time.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable
from dataclasses import dataclass
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

    @property
    def sql_type(self) -> str:
        return KINDS[self].sql_type


@dataclass(frozen=True)
class KindSpec:
    """What one kind means to validation, storage, the contract and routing."""

    # The Python type pydantic validates a value of this kind as (strictly).
    python_type: Callable[[Field], Any]
    # The column type (text columns with a length become varchar(n), see Field.sql_type).
    sql_type: str
    # The type the worker's values are read as by PostgreSQL: what a value of the JSON
    # rows is cast to, or the element type of an unnest() array.
    wire_type: str
    json_schema: dict[str, Any]
    # A path parameter bound to a field of this kind, from its text; raises ValueError.
    parse_param: Callable[[str], Any]
    # Whether a value can be part of a key (compared, and echoed in replies as sent).
    key: bool = False
    # The type the fast reader (schemas/fast.py) reads a value of this kind as: accepting
    # only values pydantic accepts as python_type, as the same Python values.  None: no
    # fast reader for an entity with a field of this kind (pydantic reads its bodies).
    fast_type: Callable[[Field], Any] | None = None


def _text(field: Field) -> Any:
    return Annotated[str, StringConstraints(min_length=field.min_length,
                                            max_length=field.max_length)]


def _fast_text(field: Field) -> Any:
    return Annotated[str, msgspec.Meta(min_length=field.min_length,
                                       max_length=field.max_length)]


def _parse_bool(raw: str) -> bool:
    try:
        return {"true": True, "false": False}[raw.lower()]
    except KeyError:
        raise ValueError(f"not a boolean: {raw!r}") from None


def _parse_datetime(raw: str) -> dt.datetime:
    # Path parameters are lenient: a bare date means midnight, no offset means UTC.
    value = dt.datetime.fromisoformat(raw)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _no_param(raw: str) -> Any:
    raise ValueError("a path parameter cannot hold an array of objects")


KINDS: dict[Kind, KindSpec] = {
    Kind.TEXT: KindSpec(
        python_type=_text, sql_type="text", wire_type="text",
        json_schema={"type": "string"}, parse_param=str, key=True, fast_type=_fast_text),
    Kind.INTEGER: KindSpec(
        python_type=lambda _: Annotated[int, PydanticField(ge=INT32_MIN, le=INT32_MAX)],
        sql_type="integer", wire_type="integer",
        json_schema={"type": "integer", "minimum": INT32_MIN, "maximum": INT32_MAX},
        parse_param=int, key=True,
        fast_type=lambda _: Annotated[int, msgspec.Meta(ge=INT32_MIN, le=INT32_MAX)]),
    Kind.BOOLEAN: KindSpec(
        python_type=lambda _: bool, sql_type="boolean", wire_type="boolean",
        json_schema={"type": "boolean"}, parse_param=_parse_bool, fast_type=lambda _: bool),
    Kind.DECIMAL: KindSpec(
        # float, not Decimal: strict Decimal accepts JSON strings, which the API does not.
        python_type=lambda _: Annotated[float, PydanticField(allow_inf_nan=False)],
        sql_type="numeric",
        # Amounts arrive as JSON numbers (floats); float8 -> numeric keeps 15 significant
        # digits, so 1234567.89 is stored as 1234567.89, not as the float's binary expansion.
        wire_type="float8",
        json_schema={"type": "number"}, parse_param=float,
        # A number beyond the largest float reads as infinity, which the bounds refuse
        # as allow_inf_nan=False does.
        fast_type=lambda _: Annotated[float, msgspec.Meta(ge=-sys.float_info.max,
                                                          le=sys.float_info.max)]),
    Kind.DATETIME: KindSpec(
        python_type=lambda _: dt.datetime, sql_type="timestamptz", wire_type="timestamptz",
        json_schema={"type": "string", "format": "date-time"},
        parse_param=_parse_datetime, key=True, fast_type=lambda _: dt.datetime),
    Kind.OBJECTS: KindSpec(
        python_type=lambda _: list[dict[str, Any]], sql_type="jsonb", wire_type="jsonb",
        json_schema={"type": "array", "items": {"type": "object"}}, parse_param=_no_param,
        # None: msgspec nests arrays and objects deeper than pydantic's JSON parser allows,
        # so only pydantic can say which of those bodies are valid.
        fast_type=None),
}
# Every kind must have its row: a kind missing here fails at import.
assert set(KINDS) == set(Kind), f"kinds without a row: {set(Kind) - set(KINDS)}"

# Kinds whose values are echoed in replies and compared as keys.
KEY_KINDS = tuple(kind for kind, spec in KINDS.items() if spec.key)
