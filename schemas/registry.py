"""All declared entities, and routing from a request path to its entity.

Entities are discovered: every module of this package that defines an :class:`Entity` at
top level contributes it, so adding an endpoint is adding one module and nothing else.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from functools import cache
from urllib.parse import unquote

from schemas.entity import Entity


@dataclass(frozen=True)
class Route:
    """A path matched to its entity, with the path parameters decoded."""

    entity: Entity
    params: dict[str, str]


def _segments(path: str) -> list[str]:
    path = path.split("?", 1)[0]
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    # Split before decoding, so an encoded "/" (%2F) stays inside its segment.
    return [unquote(part) for part in path.split("/")]


class Registry:
    """Entities by name and by path template."""

    def __init__(self, entities: tuple[Entity, ...]) -> None:
        names = [e.name for e in entities]
        if len(set(names)) != len(names):
            raise ValueError("entity names must be unique")
        self.entities = entities
        self._by_name = {e.name: e for e in entities}
        self._templates = [(e, e.path.split("/")) for e in entities]

    def by_name(self, name: str) -> Entity:
        return self._by_name[name]

    def route(self, path: str) -> Route | None:
        """The entity whose template matches ``path``, or None."""
        if not path.startswith("/"):
            return None
        segments = _segments(path)
        for entity, template in self._templates:
            if len(template) != len(segments):
                continue
            params: dict[str, str] = {}
            for want, got in zip(template, segments, strict=True):
                if want.startswith("{") and want.endswith("}"):
                    if not got:
                        break
                    params[want[1:-1]] = got
                elif want != got:
                    break
            else:
                return Route(entity, params)
        return None


def discover_entities() -> tuple[Entity, ...]:
    """Every :class:`Entity` defined at the top level of a module of this package."""
    import schemas

    found: list[Entity] = []
    for info in sorted(pkgutil.iter_modules(schemas.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"schemas.{info.name}")
        for value in vars(module).values():
            if isinstance(value, Entity) and value not in found:
                found.append(value)
    return tuple(sorted(found, key=lambda e: e.name))


@cache
def default_registry() -> Registry:
    return Registry(discover_entities())
