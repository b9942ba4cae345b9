"""Reading a body's items, pure: by the fast reader (schemas/fast.py) where it can, which
accepts only what the pydantic models accept, else by pydantic in one call; a body with
more items than the limit is refused before anything reads it item by item.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from schemas.entity import Entity
from schemas.fast import fast_reader_for
from schemas.models import EntityModel
from worker.core import errors


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
