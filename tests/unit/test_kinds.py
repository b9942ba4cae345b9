"""Each kind's row (schemas/kinds.py) agrees with itself: its sample values are valid to
pydantic, to the fast reader and to its JSON Schema; its changed values differ; its fewest
bytes are no more than a value takes; and the importer maps its OpenAPI pattern to it.  A
new kind's row is held to the same."""

from __future__ import annotations

from typing import Any

import jsonschema
import msgspec
import orjson
import pytest
from pydantic import TypeAdapter

from schemas.entity import Field
from schemas.importer.document import kind_of
from schemas.jsonschema import ITEM_RESULT_SCHEMA
from schemas.kinds import Kind
from schemas.statuses import ItemStatus

NUMBERS = (0, 1, 35, 36, 1_295, 123_456, 10**6 + 7)


def _fields(kind: Kind) -> list[Field]:
    return [Field("f", kind, required=True, nullable=False),
            Field("f", kind, required=True, nullable=False, min_length=3, max_length=4),
            Field("f", kind, required=True, nullable=False, max_length=1)]


def _read(field: Field, value: Any) -> Any:
    """``value`` as pydantic validates it (strictly, from JSON)."""
    return TypeAdapter(field.kind.spec.python_type(field)).validate_json(
        orjson.dumps(value), strict=True)


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.name)
def test_sample_values_are_valid_everywhere(kind: Kind) -> None:
    spec = kind.spec
    for field in _fields(kind):
        for n in NUMBERS:
            value = spec.sample(field, n)
            changed = spec.changed(value)
            assert changed != value
            for sample in (value, changed):
                text = orjson.dumps(sample)
                read = _read(field, sample)
                jsonschema.validate(sample, spec.json_schema)
                assert spec.min_json_bytes(field) <= len(text), (field, sample)
                if spec.fast_type is not None:
                    fast = msgspec.json.decode(text, type=spec.fast_type(field))
                    assert fast == read
                assert spec.database_value(sample) is not None


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.name)
def test_different_numbers_give_different_samples(kind: Kind) -> None:
    field = Field("f", kind, required=True, nullable=False)
    if kind.spec.key:
        assert len({orjson.dumps(kind.spec.sample(field, n)) for n in NUMBERS}) == len(NUMBERS)


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.name)
def test_the_importer_maps_each_kinds_pattern_to_it(kind: Kind) -> None:
    assert kind_of("f", dict(kind.spec.openapi)) is kind
    # What a property says besides its kind's pattern does not change its kind.
    assert kind_of("f", {**kind.spec.openapi, "description": "x", "nullable": True}) is kind


def test_the_reply_schema_lists_every_item_status() -> None:
    assert ITEM_RESULT_SCHEMA["properties"]["status"]["enum"] == sorted(ItemStatus)
    assert all(status.meaning for status in ItemStatus)
