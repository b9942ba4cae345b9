"""JSON Schema of the messages, derived from the declarations.  Pure: dicts out.

One item schema per entity (what the worker's validation accepts, as far as JSON Schema
can say it: names are matched case-insensitively by the worker, which JSON Schema cannot
express), and the reply shapes: the 207 body and the RFC 7807 problem.  The gateway's
OpenAPI document and the AsyncAPI document are built from these.
"""

from __future__ import annotations

from typing import Any

from schemas.entity import Entity, Field
from schemas.statuses import ITEM_STATUS_CODES


def field_schema(field: Field) -> dict[str, Any]:
    schema = dict(field.kind.spec.json_schema)
    if field.min_length is not None:
        schema["minLength"] = field.min_length
    if field.max_length is not None:
        schema["maxLength"] = field.max_length
    if field.nullable:
        schema["type"] = [schema["type"], "null"]
    return schema


def item_schema(entity: Entity) -> dict[str, Any]:
    """One item of a batch of ``entity``."""
    return {
        "type": "object",
        "properties": {f.name: field_schema(f) for f in entity.fields},
        "required": [f.name for f in entity.fields if f.required],
        "additionalProperties": False,
    }


def batch_schema(entity: Entity) -> dict[str, Any]:
    """A request body: a JSON array of items."""
    return {"type": "array", "items": item_schema(entity)}


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 7807 problem details of a whole-message error",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": ["string", "null"], "description": "the request path"},
    },
    "required": ["type", "title", "status"],
}

ITEM_RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "array", "description": "the key fields in key order, as sent",
               "items": {"type": "object", "properties": {"key": {"type": "string"},
                                                           "value": {}},
                         "required": ["key", "value"]}},
        "status": {"type": "integer", "enum": ITEM_STATUS_CODES},
        "body": {"type": "string"},
    },
    "required": ["id", "status", "body"],
}

REPLY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "207: one result per request item, in order (data); or a whole-message "
                   "error (error, with data null)",
    "properties": {
        "data": {"type": ["array", "null"], "items": ITEM_RESULT_SCHEMA},
        "error": {"oneOf": [{"type": "null"}, PROBLEM_SCHEMA]},
        "debug": {"type": "object", "properties": {
            "activityID": {"type": "string"},
            "dryRun": {"type": "boolean", "description": "true on the answer to a dry run "
                       "(x-upsert-dry-run): nothing was written"},
            "processedBefore": {"type": "boolean", "description": "on a dry run's answer: "
                                "its producer's message_id is recorded, so a real send of "
                                "it gets the recorded reply, not these answers"}}},
    },
    "required": ["data", "error", "debug"],
}
