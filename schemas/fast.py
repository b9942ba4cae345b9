"""The fast reader of clean bodies: msgspec, strict, in front of the pydantic models.

pydantic's ``validate_json`` builds a dict per item and costs about four times what
msgspec costs to read the same body into structs (measured in BENCHMARKS.md, item 14).
The fast reader accepts a subset of what the pydantic models (schemas/models.py) accept,
and reads what it accepts as the same Python values; whatever it refuses, pydantic reads
as before, and names each offending field.  So validation is exactly as strict as the
pydantic models, and every answer says what pydantic says.  tests/unit/test_fast_reader.py
holds the two to each other, value by value and body by body.

Where the two readers differ, the fast one must refuse:

- arrays of objects: msgspec nests deeper than pydantic's parser allows, so an entity
  with such a field has no fast reader (KindSpec.fast_type is None);
- date-times with more than six digits of fractions of a second (KindSpec.rounds_fractions):
  pydantic truncates them to microseconds, msgspec rounds.  A body that may hold one (seven
  digits after a dot that a number would not end with, or a digit or dot spelled as a \\u
  escape) is left to pydantic: see :func:`FastReader.may_read`.

A valid item comes out as a tuple of its values in field order (None for a field left
out), the form the writer sends to PostgreSQL (worker/store/statements.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import msgspec
from msgspec.structs import astuple

from schemas.entity import Entity

# A fraction of a second with more than six digits: a date-time msgspec would round.  In
# a date-time the digits end the string or meet its offset; a number's meet a comma, a
# bracket, a space or an exponent, so amounts with long fractions do not match.
_LONG_FRACTION = re.compile(rb'\.[0-9]{7,}[Zz+\-"\\]')
# A digit or a dot spelled as a \u escape, which could hide such a fraction from the above.
_ESCAPED_DIGIT_OR_DOT = re.compile(rb"\\u00(?:3[0-9]|2[eE])")

# The items of a JSON array, unread: to read one item at a time once a body failed.
_ITEMS = msgspec.json.Decoder(list[msgspec.Raw])


@dataclass(frozen=True)
class FastReader:
    """Reads a body of one entity's items, or refuses it."""

    body: msgspec.json.Decoder[list[Any]]
    item: msgspec.json.Decoder[Any]
    # Whether a field's kind rounds long fractions of a second (KindSpec.rounds_fractions).
    guards_fractions: bool
    # The fewest bytes a clean item can be written in: its required fields, each with the
    # shortest value its kind allows (KindSpec.min_json_bytes).
    min_item_bytes: int

    def may_read(self, body: bytes) -> bool:
        """Whether the fast reader may read ``body`` at all: not if a date-time in it could
        have more than six digits of fractions (a memchr first: most bodies have no '.')."""
        if not self.guards_fractions:
            return True
        if b"." in body and _LONG_FRACTION.search(body):
            return False
        return not (b"\\" in body and _ESCAPED_DIGIT_OR_DOT.search(body))

    def holds_at_most(self, count: int, body: bytes) -> bool:
        """Whether ``body`` is too short to hold more than ``count`` clean items."""
        return len(body) <= count * self.min_item_bytes

    def read_clean(self, body: bytes) -> list[tuple[Any, ...]] | None:
        """Every item's row, if the body is a JSON array of clean items; else None."""
        try:
            return list(map(astuple, self.body.decode(body)))
        except (msgspec.DecodeError, RecursionError):  # RecursionError: msgspec's depth limit
            return None

    def read_each(self, body: bytes) -> list[Any] | None:
        """Each item's row, or for an item the fast reader refuses its JSON text (a
        ``msgspec.Raw``) for pydantic to read; None for a body that is not a JSON array it
        can read at all (pydantic reads and answers that one whole)."""
        try:
            items = _ITEMS.decode(body)
        except (msgspec.DecodeError, RecursionError):
            return None
        return [self._read_item(item) for item in items]

    def _read_item(self, item: msgspec.Raw) -> tuple[Any, ...] | msgspec.Raw:
        try:
            return astuple(self.item.decode(item))
        except msgspec.DecodeError:
            return item


@cache
def fast_reader_for(entity: Entity) -> FastReader | None:
    """The fast reader of ``entity``, or None where only pydantic may read its items."""
    struct_fields: list[Any] = []
    for i, field in enumerate(entity.fields):
        fast_type = field.kind.spec.fast_type
        if fast_type is None:
            return None
        value_type = fast_type(field)
        if field.nullable:
            value_type = value_type | None
        # Named by position, spelled as the JSON names: any JSON name is safe then.
        # A field that may be left out reads as None, as pydantic's missing key does in
        # the row; a null it does not allow still fails its type.
        struct_fields.append((f"f{i}", value_type) if field.required
                             else (f"f{i}", value_type, None))
    # Built at run time from the declaration, so mypy cannot see its fields: Any.
    struct: Any = msgspec.defstruct(
        entity.name, struct_fields, kw_only=True, forbid_unknown_fields=True,
        rename={f"f{i}": field.name for i, field in enumerate(entity.fields)},
        # No cycles through str, int, float, bool and datetime: not for the collector.
        gc=False)
    # {"name":value,...}: braces, and per required member its quoted name, a colon, its
    # value and a comma (one comma too many, one brace too few: even).
    min_item_bytes = 1 + sum(len(f.name.encode()) + 4 + f.kind.spec.min_json_bytes(f)
                             for f in entity.fields if f.required)
    return FastReader(body=msgspec.json.Decoder(list[struct]),
                      item=msgspec.json.Decoder(struct),
                      guards_fractions=any(f.kind.spec.rounds_fractions
                                           for f in entity.fields),
                      min_item_bytes=min_item_bytes)
