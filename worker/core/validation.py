"""Item validation, pure: a JSON body in, each item's 400 answer or validated row out.

The whole body is read in one call: by the fast reader (schemas/fast.py) where it can,
which accepts only what the pydantic models accept; what it refuses, and every body it
cannot read, pydantic reads in one call as before.  Only the items that fail pydantic are
looked at again, one by one, to name each offending field and reason.  A validated row is
a tuple of the item's values in field order (None for a field left out).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from functools import cache
from typing import Any

import orjson
import pydantic_core
from pydantic import ValidationError

from schemas.entity import Entity
from schemas.fast import fast_reader_for
from schemas.kinds import Kind
from schemas.models import EntityModel, Unvalidated
from worker.core import errors
from worker.core.batch import Batch, ItemStatus


def validate_items(batch: Batch, model: EntityModel, body: bytes, params: dict[str, Any],
                   max_items: int) -> None:
    """Validate the JSON body item by item into ``batch`` (made empty): per item, its 400
    answer or its validated row, and the key it is answered under."""
    entity = batch.entity
    items = read_items(entity, model, body, max_items)
    if len(items) > max_items:
        raise errors.TooLarge(f"{len(items)} items is over the limit of {max_items}")

    batch.answers = [None] * len(items)
    # One byte first: memchr finds (or rules out) a backslash ten times faster than the
    # escape itself is searched for, and most bodies have none.
    check_nul = b"\\" in body and b"\\u0000" in body
    compared_datetimes = _compared_datetimes(entity)
    checked = check_nul or bool(entity.bindings)
    names = tuple(f.name for f in entity.fields)
    key = entity.key_positions
    (only_key,) = key if len(key) == 1 else (None,)
    ids, valid = batch.ids, batch.rows
    for index, row in enumerate(items):
        if row.__class__ is not tuple:  # read by pydantic: a dict, or Unvalidated
            if row.__class__ is Unvalidated:  # failed the body's validation: look again
                row, problems = _validate_one(model, row.value)
                if problems:  # the item as sent
                    ids.append(_item_id(entity, row))
                    batch.answer(index, ItemStatus.BAD_REQUEST, "; ".join(problems))
                    continue
            row = tuple(map(row.get, names))
        for at in compared_datetimes:
            value = row[at]
            if value is not None and value.tzinfo is None:
                row = (*row[:at], value.replace(tzinfo=dt.UTC), *row[at + 1:])
        if checked:
            problems = _binding_problems(entity, row, params)
            if check_nul:
                problems += _nul_problems(names, row)
            if problems:
                ids.append(_item_id(entity, dict(zip(names, row, strict=True))))
                batch.answer(index, ItemStatus.BAD_REQUEST, "; ".join(problems))
                continue
        # A valid item's text and int32 key values are echoed as they are; date-times
        # are put back as sent below.
        if only_key is not None:
            ids.append([{"key": names[only_key], "value": row[only_key]}])
        else:
            ids.append([{"key": names[k], "value": row[k]} for k in key])
        valid.append((index, row))
    sent_as_text = [i for i, f in enumerate(entity.key_fields) if f.kind is Kind.DATETIME]
    if sent_as_text:
        try:
            sent = orjson.loads(body)
        except orjson.JSONDecodeError:  # valid JSON orjson refuses: a number beyond float
            sent = json.loads(body)
        _echo_as_sent(batch.ids, sent, sent_as_text)


def read_items(entity: Entity, model: EntityModel, body: bytes, max_items: int) -> list[Any]:
    """Each item of the body: its row (a tuple of its values in field order) where the
    fast reader took it, else what pydantic made of it (a dict, or Unvalidated).

    Bodies are counted first (:func:`refuse_too_many_items`) before anything reads them
    item by item; a body too short to hold more than ``max_items`` clean items need not
    be, if all its items are clean."""
    fast = fast_reader_for(entity)
    if fast is None or not fast.may_read(body):
        refuse_too_many_items(entity, body, max_items)
        return read_with_pydantic(model, body)
    counted = not fast.holds_at_most(max_items, body)
    if counted:
        refuse_too_many_items(entity, body, max_items)
    rows = fast.read_clean(body)
    if rows is not None:
        return rows
    if not counted:
        refuse_too_many_items(entity, body, max_items)
    items = fast.read_each(body)
    if items is None:
        return read_with_pydantic(model, body)
    for i, item in enumerate(items):
        if item.__class__ is not tuple:  # its JSON text: pydantic reads it as in a body
            try:
                items[i] = model.batch.validate_json(b"[" + bytes(item) + b"]")[0]
            except ValidationError:
                # JSON that msgspec reads and pydantic does not (nested deeper than
                # pydantic's parser allows): the body is malformed, as pydantic says.
                return read_with_pydantic(model, body)
    return items


def read_with_pydantic(model: EntityModel, body: bytes) -> list[Any]:
    """Each item of the body as pydantic reads it: a dict, or Unvalidated."""
    try:
        return model.batch.validate_json(body)
    except ValidationError as e:  # items never fail the body: the body itself is wrong
        if any(err["type"] == "json_invalid" for err in e.errors()):
            raise errors.MalformedMessage(
                f"body is not valid JSON: {e.errors()[0]['msg']}") from e
        raise errors.MalformedMessage("body must be a JSON array of items") from e


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


_JSON_SPACE = re.compile(r"[ \t\n\r]*")


def refuse_too_many_items(entity: Entity, body: bytes, max_items: int) -> None:
    """Refuse a body with more items than the limit before validating it.

    Validation parses the whole body first and keeps an error per bad value: a body of a
    few million tiny items (``[{},{},...]``, ``[1,1,...]``) would take gigabytes.  Two
    byte counts bound the values a body can hold; only a body over those bounds (which no
    batch within the limits reaches, bar strings full of braces and commas) is counted
    exactly, item by item, stopping one past the limit.  Malformed JSON is left to the
    validation to report.
    """
    if (body.count(b"{") <= max_items
            and body.count(b",") < max_items * (len(entity.fields) + 1)):
        return
    try:
        text = body.decode("utf-8")
        decoder = json.JSONDecoder()
        at = _JSON_SPACE.match(text).end()  # type: ignore[union-attr]
        if text[at:at + 1] != "[":
            return
        at = _JSON_SPACE.match(text, at + 1).end()  # type: ignore[union-attr]
        items = members = 0
        while text[at:at + 1] != "]":
            value, at = decoder.raw_decode(text, at)
            items += 1
            members += len(value) if isinstance(value, dict) else 0
            if items > max_items:
                # Counting stops here: the body holds this many items or more.
                raise errors.TooLarge(f"at least {items} items is over the limit of "
                                      f"{max_items}")
            at = _JSON_SPACE.match(text, at).end()  # type: ignore[union-attr]
            if text[at:at + 1] == ",":
                at = _JSON_SPACE.match(text, at + 1).end()  # type: ignore[union-attr]
            elif text[at:at + 1] != "]":
                return
    except (ValueError, RecursionError):
        return
    if members > max_items * len(entity.fields):
        raise errors.TooLarge(f"{members} fields in {items} items is over the limit of "
                              f"{max_items} items of {len(entity.fields)} fields")


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


def _binding_problems(entity: Entity, row: tuple[Any, ...],
                      params: dict[str, Any]) -> list[str]:
    problems = []
    for param, field_name in entity.bindings.items():
        value = row[entity.positions[field_name]]
        if value != params[param]:
            problems.append(f"{field_name}: {_show_bound_value(value)} does not match path "
                            f"{param} {_show_bound_value(params[param])}")
    return problems


@cache
def _compared_datetimes(entity: Entity) -> list[int]:
    """The date-time fields whose values the worker compares (keys, path bindings, parent
    keys): one sent without an offset is taken as UTC there, so that it compares as the
    database stores it.  Other date-times stay as sent, and the writer sends the ones
    without an offset as UTC (orjson's OPT_NAIVE_UTC)."""
    compared = {*entity.key, *entity.bindings.values(),
                *(name for parent in entity.parents for name in parent.fields)}
    return [i for i, f in enumerate(entity.fields)
            if f.kind is Kind.DATETIME and f.name in compared]


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
