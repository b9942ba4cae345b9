"""A batch's routing key: the name of the entity its path names (``/benefits-batch`` ->
``Benefit``), or ``unknown``.

The worker routes each batch by its path header, not by its routing key; the routing key
lets others bind to one entity's batches on the topic exchange.  The path templates and
entity names are data (routes.json), made from the worker's declarations, and matched the
way the worker matches them (schemas/registry.py): a literal segment wins over a parameter,
a parameter matches any segment that is not empty.  tests/unit/test_client_package.py
checks that the two agree, and says how to write routes.json again when they do not.
"""

from __future__ import annotations

import functools
from importlib import resources
from urllib.parse import unquote

import orjson

from vbapi_upsert_client.wire import UNKNOWN_ROUTE

_PARAM = "{}"


class _Node:
    __slots__ = ("children", "name")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.name: str | None = None


class Routes:
    """Path templates (``/benefits/{benefitCode}/places-batch``) and their entity names."""

    def __init__(self, templates: dict[str, str]) -> None:
        self.templates = dict(templates)
        self._root = _Node()
        for template, name in self.templates.items():
            node = self._root
            for segment in template.split("/"):
                param = segment.startswith("{") and segment.endswith("}")
                node = node.children.setdefault(_PARAM if param else segment, _Node())
            node.name = name

    def entity_of(self, path: str) -> str | None:
        """The entity name of ``path``, or None when no template matches it."""
        if not path.startswith("/"):
            return None
        path = path.split("?", 1)[0]
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]
        # Split before decoding, so an encoded "/" (%2F) stays inside its segment.
        return _walk(self._root, [unquote(part) for part in path.split("/")], 0)

    def routing_key(self, path: str | None) -> str:
        """The routing key of a batch to ``path``: its entity name, or ``unknown``."""
        return (self.entity_of(path) if path else None) or UNKNOWN_ROUTE


def _walk(node: _Node, segments: list[str], at: int) -> str | None:
    if at == len(segments):
        return node.name
    literal = node.children.get(segments[at])
    if literal is not None:  # a literal segment wins over a parameter
        found = _walk(literal, segments, at + 1)
        if found is not None:
            return found
    param = node.children.get(_PARAM)
    if param is not None and segments[at]:
        return _walk(param, segments, at + 1)
    return None


@functools.cache
def default_routes() -> Routes:
    """The routes of the worker's declarations, shipped with the client (routes.json)."""
    data = resources.files(__package__).joinpath("routes.json").read_bytes()
    return Routes(orjson.loads(data))
