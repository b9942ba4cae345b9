"""Item validation, pure: a JSON body in, each item's 400 answer or validated row out.

The whole body is read in one call (worker/core/reading.py): by the fast reader where it
can, else by pydantic.  Only the items that fail pydantic are looked at again, one by one,
to name each offending field and reason.  A validated row is a tuple of the item's values
in field order (None for a field left out).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from functools import cache, partial
from typing import Any, NamedTuple

import orjson
import pydantic_core
from pydantic import ValidationError

from schemas.entity import Entity
from schemas.models import EntityModel, Unvalidated
from worker.core import errors
from worker.core.batch import ItemAnswer, ItemId, ItemStatus, Row
from worker.core.reading import read_items


class Validated(NamedTuple):
    """The items of a body, in request order: the key each is answered under, its 400
    answer (None for a valid item), and the valid items' rows with their indexes."""

    ids: list[ItemId]
    known: list[ItemAnswer | None]
    rows: list[tuple[int, Row]]


def validate_items(entity: Entity, model: EntityModel, body: bytes, params: dict[str, Any],
                   max_items: int) -> Validated:
    """Validate the JSON body item by item: per item, its 400 answer or its validated row,
    and the key it is answered under."""
    items = read_items(entity, model, body, max_items)
    if len(items) > max_items:
        raise errors.TooLarge(f"{len(items)} items is over the limit of {max_items}")
    out = Validated([], [None] * len(items), [])
    # One byte first: memchr finds (or rules out) a backslash ten times faster than the
    # escape itself is searched for, and most bodies have none.
    check_nul = b"\\" in body and b"\\u0000" in body
    _sort_items(_Checks(entity, model, params, check_nul), items, out)
    sent_as_text = [i for i, f in enumerate(entity.key_fields) if f.kind.spec.echoed_as_sent]
    if sent_as_text:
        try:
            sent = orjson.loads(body)
        except orjson.JSONDecodeError:  # valid JSON orjson refuses: a number beyond float
            sent = json.loads(body)
        _echo_as_sent(out.ids, sent, sent_as_text)
    return out


class _Checks:
    """What every item of one body is checked against, beyond its model."""

    def __init__(self, entity: Entity, model: EntityModel, params: dict[str, Any],
                 check_nul: bool) -> None:
        self.entity = entity
        self.model = model
        self.names = tuple(f.name for f in entity.fields)
        self.params = params
        # What is wrong with a row its model accepted (a value that does not match the
        # path, a NUL character), or None when a body can have nothing of the kind: one
        # call per item where there is something to check, none where there is not.
        self.problems: Callable[[Row], list[str]] | None = (
            self._problems if check_nul
            else partial(_binding_problems, entity, params) if entity.bindings else None)

    def _problems(self, row: Row) -> list[str]:
        return _binding_problems(self.entity, self.params, row) + _nul_problems(self.names,
                                                                                row)

    def refuse(self, out: Validated, index: int, sent: Any, problems: list[str]) -> None:
        """Item ``index`` answered 400 with its ``problems``, under its key as ``sent``."""
        out.ids.append(_item_id(self.entity, sent))
        out.known[index] = ItemAnswer(ItemStatus.BAD_REQUEST, "; ".join(problems))


def _sort_items(checks: _Checks, items: list[Any], out: Validated) -> None:
    """Each item into ``out``: its row, or its 400 answer.  The fast reader's rows (tuples)
    go the short way: no call per item unless there is something to check."""
    entity, names, problems_of = checks.entity, checks.names, checks.problems
    compared = _compared_values(entity)
    key = entity.key_positions
    (only_key,) = key if len(key) == 1 else (None,)
    ids, valid = out.ids, out.rows
    for index, row in enumerate(items):
        if row.__class__ is not tuple:  # read by pydantic: a dict, or Unvalidated
            row, problems = _pydantic_row(checks, row)
            if problems:  # the item as sent
                checks.refuse(out, index, row, problems)
                continue
        for at, compared_as in compared:
            value = row[at]
            if value is not None and (normal := compared_as(value)) is not value:
                row = (*row[:at], normal, *row[at + 1:])
        if problems_of is not None and (problems := problems_of(row)):
            checks.refuse(out, index, dict(zip(names, row, strict=True)), problems)
            continue
        # A valid item's text and int32 key values are echoed as they are; date-times
        # are put back as sent (validate_items).
        ids.append([{"key": names[only_key], "value": row[only_key]}] if only_key is not None
                   else [{"key": names[k], "value": row[k]} for k in key])
        valid.append((index, row))


def _pydantic_row(checks: _Checks, item: Any) -> tuple[Any, list[str]]:
    """An item pydantic read: (its row, no problems), or (the item as sent, its problems)."""
    if item.__class__ is Unvalidated:  # failed the body's validation: look again
        item, problems = _validate_one(checks.model, item.value)
        if problems:
            return item, problems
    return tuple(map(item.get, checks.names)), []


def _echo_as_sent(ids: list[list[dict[str, Any]]], items: list[Any],
                  positions: list[int]) -> None:
    """Put the key values at ``positions`` back as the items sent them: a date-time key
    is echoed in the reply as its original text, not as the instant it was parsed to."""
    for item_id, item in zip(ids, items, strict=True):
        for at in positions:
            name = item_id[at]["key"]
            value = _sent(item, name)
            item_id[at]["value"] = value if isinstance(value, (str, int, float, bool)) else None


def _sent(item: Any, name: str) -> Any:
    if not isinstance(item, dict):
        return None
    if name in item:
        return item[name]
    lowered = name.lower()
    return next((v for k, v in item.items() if k.lower() == lowered), None)


def _validate_one(model: EntityModel, item: Any) -> tuple[Any, list[str]]:
    """One item, names matched case-insensitively: (the row, its problems)."""
    if not isinstance(item, dict):
        return {}, [f"item must be a JSON object, not {_json_type(item)}"]
    canonical: dict[str, Any] = {}
    problems: list[str] = []
    for name, value in item.items():
        target = model.canonical.get(name.lower())
        if target is None:
            problems.append(f"{name}: unknown field")
        elif target in canonical:
            problems.append(f"{name}: duplicate of field {target}")
        else:
            canonical[target] = value
    try:
        row = model.item.validate_json(pydantic_core.to_json(canonical))
    except ValidationError as e:
        problems += [f"{_loc(err['loc'])}: {err['msg']}" for err in e.errors()]
        return canonical, problems
    return (canonical if problems else row), problems


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "item"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "an array"}.get(type(value), type(value).__name__)


def _binding_problems(entity: Entity, params: dict[str, Any],
                      row: tuple[Any, ...]) -> list[str]:
    problems = []
    for param, field_name in entity.bindings.items():
        value = row[entity.positions[field_name]]
        if value != params[param]:
            problems.append(f"{field_name}: {_show_bound_value(value)} does not match path "
                            f"{param} {_show_bound_value(params[param])}")
    return problems


@cache
def _compared_values(entity: Entity) -> list[tuple[int, Callable[[Any], Any]]]:
    """The fields whose values the worker compares (keys, path bindings, parent keys) and
    whose kind says how a value compares as the database stores it (KindSpec.compared_as:
    a date-time without an offset is taken as UTC), each with that normalisation."""
    compared = {*entity.key, *entity.bindings.values(),
                *(name for parent in entity.parents for name in parent.fields)}
    return [(i, f.kind.spec.compared_as) for i, f in enumerate(entity.fields)
            if f.kind.spec.compared_as is not None and f.name in compared]


def _show_bound_value(value: Any) -> str:
    """A value in a binding problem: text and date-times quoted, others as Python shows them."""
    if isinstance(value, dt.datetime):
        return f"'{value.isoformat()}'"
    return repr(value) if not isinstance(value, str) else f"'{value}'"


def _nul_problems(names: tuple[str, ...], row: tuple[Any, ...]) -> list[str]:
    return [f"{name}: must not contain a NUL character"
            for name, value in zip(names, row, strict=True) if _holds_nul(value)]


def _holds_nul(value: Any) -> bool:
    """Whether a value holds a NUL anywhere: PostgreSQL stores none in text, nor in jsonb
    (an array of objects), where it may hide in a nested string or an object's key."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def _item_id(entity: Entity, row: Any) -> list[dict[str, Any]]:
    """The key fields in key order with their JSON names and the values as sent."""
    values = row if isinstance(row, dict) else {}
    out = []
    for key in entity.key:
        value = values.get(key)
        # Keys are text or integer fields; a scalar sent with another JSON type is still
        # echoed as sent, anything else (an array, an object) as null.
        if not isinstance(value, (str, int, float, bool)):
            value = None
        elif isinstance(value, int) and not -(2**63) <= value < 2**64:
            # The reply's JSON writer takes 64-bit integers only: a bigger one is echoed
            # as the (approximate) number it is, or null beyond any float.
            value = float(value) if abs(value) < 10**308 else None
        out.append({"key": key, "value": value})
    return out
