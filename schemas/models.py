"""Strict pydantic validators derived from the entity declarations: what validation means.

The worker reads clean bodies with the fast reader (schemas/fast.py), which accepts only
what these accept; these read every body or item it refuses, and name every problem.

One ``TypeAdapter`` per entity validates a whole JSON body in one call (``validate_json``)
into plain dicts keyed by the canonical JSON names, handing back each item that fails as
:class:`Unvalidated` instead of failing the body; a second one validates a single item,
for the slower path that names each offending field and matches names case-insensitively.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, NotRequired, Required

from pydantic import ConfigDict, PlainValidator, TypeAdapter
from pydantic import Field as PydanticField
from typing_extensions import TypedDict

from schemas.entity import Entity, Field

# strict: JSON types must match exactly ("true" is no boolean, 1.5 no integer);
# extra="forbid": a field that matches no field of the entity is an error.
_CONFIG = ConfigDict(strict=True, extra="forbid")


def _python_type(field: Field) -> Any:
    base = field.kind.spec.python_type(field)
    if field.nullable:
        base = base | None
    return Required[base] if field.required else NotRequired[base]


class Unvalidated:
    """An item of a body that did not validate as it stands, as it was sent."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


@dataclass(frozen=True)
class EntityModel:
    """The validators of one entity."""

    # A JSON array of items -> per item its validated dict, or Unvalidated.
    batch: TypeAdapter[list[dict[str, Any] | Unvalidated]]
    item: TypeAdapter[dict[str, Any]]
    # lower-cased JSON name -> canonical JSON name, for case-insensitive matching
    canonical: dict[str, str]


def build_model(entity: Entity) -> EntityModel:
    annotations = {f.name: _python_type(f) for f in entity.fields}
    # Built at run time from the declaration, so mypy cannot see its fields: Any.
    item_type: Any = TypedDict(entity.name, annotations, total=False)  # type: ignore[misc]
    setattr(item_type, "__pydantic_config__", _CONFIG)  # noqa: B010 (mypy sees no such attr)
    # Left to right: an item is tried as the entity first; only one that fails becomes
    # Unvalidated (a Python call for bad items only).  A whole body costs one pass, good
    # or bad, where failing and validating again cost three.
    item_or_unvalidated: Any = Annotated[item_type | Annotated[Any, PlainValidator(Unvalidated)],
                                         PydanticField(union_mode="left_to_right")]
    batch_type: Any = list[item_or_unvalidated]
    return EntityModel(
        batch=TypeAdapter(batch_type),
        item=TypeAdapter(item_type),  # type: ignore[arg-type]
        canonical={f.name.lower(): f.name for f in entity.fields},
    )


@cache
def model_for(entity: Entity) -> EntityModel:
    """The validators of ``entity``, built the first time it is used: building those of
    every entity would cost seconds and tens of megabytes at start."""
    return build_model(entity)
