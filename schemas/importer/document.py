"""Reading an OpenAPI 3 document: its batch operations, their models and single-item paths,
and each model property as a field declaration of the kind its row maps it to."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from schemas.importer.naming import ImportFailed
from schemas.kinds import Kind

BATCH_SUMMARY = "Create or Update Batch"


def model_of(schema: dict[str, Any]) -> str:
    """The model a schema refers to (``#/components/schemas/<model>``)."""
    return str(schema["$ref"]).rsplit("/", 1)[-1]


def _matches(prop: dict[str, Any], pattern: dict[str, Any]) -> bool:
    """Whether ``prop`` says everything ``pattern`` says (nested objects alike)."""
    for key, wanted in pattern.items():
        value = prop.get(key)
        if isinstance(wanted, dict):
            if not (isinstance(value, dict) and _matches(value, wanted)):
                return False
        elif value != wanted:
            return False
    return True


def _asks(pattern: dict[str, Any]) -> int:
    """How much a pattern asks of a property: its entries, nested ones too."""
    return sum(1 + (_asks(v) if isinstance(v, dict) else 0) for v in pattern.values())


def kind_of(name: str, prop: dict[str, Any]) -> Kind:
    """The kind of a model property: of the kinds whose OpenAPI pattern it matches
    (KindSpec.openapi), the one whose pattern asks the most of it."""
    matching = [kind for kind in Kind if _matches(prop, kind.spec.openapi)]
    if matching:
        return max(matching, key=lambda kind: _asks(kind.spec.openapi))
    supported = [kind.spec.openapi for kind in Kind
                 if kind.spec.openapi.get("type") == prop.get("type")]
    if supported:
        raise ImportFailed(f"field {name}: type {prop.get('type')!r} is supported only as "
                           + " or ".join(json.dumps(p) for p in supported))
    raise ImportFailed(f"field {name}: unsupported type {prop.get('type')!r}")


def field_declaration(name: str, prop: dict[str, Any], required: bool) -> dict[str, Any]:
    """A model property as a field of the declarations."""
    out: dict[str, Any] = {"name": name, "type": kind_of(name, prop).value}
    if required:
        out["required"] = True
    if prop.get("nullable"):
        out["nullable"] = True
    for source, target in (("minLength", "minLength"), ("maxLength", "maxLength")):
        if source in prop:
            out[target] = int(prop[source])
    return out


def _json_body(operation: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = operation.get("requestBody", {}).get("content", {}).get(
        "application/json", {}).get("schema", {})
    return schema


def _json_reply(operation: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = operation.get("responses", {}).get("200", {}).get(
        "content", {}).get("application/json", {}).get("schema", {})
    return schema


class Document:
    """The batch operations of a document, their models and single-item paths."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.schemas: dict[str, Any] = doc.get("components", {}).get("schemas", {})
        self.batch: dict[str, str] = {}             # model -> batch path
        self.items: dict[str, list[str]] = defaultdict(list)  # model -> item paths
        for path, operations in doc.get("paths", {}).items():
            for method, op in operations.items():
                if isinstance(op, dict):
                    self._read(path, method, op)

    def _read(self, path: str, method: str, op: dict[str, Any]) -> None:
        if method == "put" and str(op.get("summary", "")).startswith(BATCH_SUMMARY):
            body = op["requestBody"]["content"]["application/json"]["schema"]
            model = model_of(body["items"])
            if model in self.batch:
                raise ImportFailed(f"model {model} has two batch paths: "
                                   f"{self.batch[model]} and {path}")
            self.batch[model] = path
        elif method == "put":
            body = _json_body(op)
            if "$ref" in body:
                self._add_item(model_of(body), path)
        elif method == "get":
            reply = _json_reply(op)
            if "$ref" in reply and model_of(reply).endswith("VBAResponse"):
                self._add_item(model_of(reply).removesuffix("VBAResponse"), path)

    def _add_item(self, model: str, path: str) -> None:
        if path not in self.items[model]:
            self.items[model].append(path)
