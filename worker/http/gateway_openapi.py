"""The gateway's OpenAPI 3 document, generated from the declarations.  Pure: dicts out."""

from __future__ import annotations

import re
from typing import Any

from schemas.entity import Entity
from schemas.jsonschema import PROBLEM_SCHEMA, REPLY_SCHEMA, item_schema
from schemas.registry import Registry
from worker.core.wire import DATABASE_HEADER, JSON_CONTENT_TYPE

_PARAM = re.compile(r"\{([^}]+)\}")
_PROBLEMS = {"400": "malformed message", "401": "no valid API key, or no user for a "
             "database that names its producers", "403": "the producer may not write that "
             "database", "404": "no such endpoint or database", "413": "body or items over "
             "the limit", "415": "content type or encoding", "503": "still failing after "
             "the worker's retries", "504": "no reply in time: the batch is queued (retry "
             "with the same Idempotency-Key)"}


def _operation(entity: Entity) -> dict[str, Any]:
    reply = {"content": {JSON_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Reply"}}}}
    parameters = [{"name": DATABASE_HEADER, "in": "header", "required": True,
                   "schema": {"type": "string"}},
                  {"name": "Idempotency-Key", "in": "header", "required": False,
                   "schema": {"type": "string"},
                   "description": "the batch's message id: a retry is never applied twice"},
                  {"name": "Prefer", "in": "header", "required": False,
                   "schema": {"type": "string"},
                   "description": "dry-run: answered with what each item would get, "
                                  "nothing written (also x-upsert-dry-run: true)"}]
    parameters += [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                   for p in _PARAM.findall(entity.path)]
    return {
        "operationId": f"upsert_batch_{entity.table}",
        "summary": f"Create or Update Batch {entity.name}",
        "parameters": parameters,
        "requestBody": {"required": True, "content": {JSON_CONTENT_TYPE: {"schema": {
            "type": "array", "items": {"$ref": f"#/components/schemas/{entity.name}"}}}}},
        "responses": {"207": {"description": "one result per item, in order", **reply},
                      **{status: {"description": text, **reply}
                         for status, text in _PROBLEMS.items()}},
    }


def openapi_document(registry: Registry) -> dict[str, Any]:
    schemas: dict[str, Any] = {e.name: item_schema(e) for e in registry.entities}
    schemas["Reply"] = REPLY_SCHEMA
    schemas["Problem"] = PROBLEM_SCHEMA
    return {
        "openapi": "3.1.0",
        "info": {"title": "vbapi-upsert-worker gateway", "version": "1",
                 "description": "The API's Create or Update Batch endpoints, answered by the "
                                "upsert worker through RabbitMQ."},
        "paths": {e.path: {"put": _operation(e)}
                  for e in sorted(registry.entities, key=lambda e: e.path)},
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                "bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"apiKey": []}, {"bearer": []}],
    }
