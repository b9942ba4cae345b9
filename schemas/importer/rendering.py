"""The declarations as the file ``schemas/vbapi.json`` holds them: diff-friendly JSON."""

from __future__ import annotations

import json
from typing import Any


def render(declarations: dict[str, Any]) -> str:
    """Diff-friendly JSON: one field, parent or column per line, keys in a fixed order."""
    return _render(declarations, "") + "\n"


def _flat(value: Any) -> bool:
    if isinstance(value, dict):
        return all(not isinstance(v, (dict, list)) or (isinstance(v, list) and
                   all(not isinstance(x, (dict, list)) for x in v)) for v in value.values())
    if isinstance(value, list):
        return all(not isinstance(x, (dict, list)) for x in value)
    return True


def _one_line(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _render(value: Any, indent: str) -> str:
    if _flat(value):
        return _one_line(value)
    inner = indent + "  "
    if isinstance(value, dict):
        body = ",\n".join(f"{inner}{_one_line(k)}: {_render(v, inner)}"
                          for k, v in value.items())
        return "{\n" + body + "\n" + indent + "}"
    body = ",\n".join(inner + _render(v, inner) for v in value)
    return "[\n" + body + "\n" + indent + "]"
