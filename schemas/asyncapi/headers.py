"""The schemas of the AsyncAPI document that are not an entity's items: the headers and
properties of requests, replies, retry copies and dead letters, and the reply."""

from __future__ import annotations

from typing import Any

from schemas.asyncapi.names import (
    DATABASE_HEADER,
    DEAD_LETTER_HEADERS,
    DRY_RUN_HEADER,
    PATH_HEADER,
    REPLY,
    REPLY_EXCHANGE,
    REPLY_HEADERS,
    REQUEST_HEADERS,
    REQUEST_PROPERTIES,
    REQUEST_QUEUE,
    RETRY_HEADERS,
)
from schemas.jsonschema import REPLY_SCHEMA


def _string(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def _integer(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "integer", "description": description, **extra}


def _headers(description: str, properties: dict[str, Any],
             required: list[str]) -> dict[str, Any]:
    """A headers schema.  Other headers are allowed: the worker carries a producer's own
    headers along on retry copies and dead letters."""
    return {"type": "object", "description": description, "properties": properties,
            "required": required, "additionalProperties": True}


# --- headers and properties --------------------------------------------------------------

_REQUEST_HEADER_PROPERTIES: dict[str, Any] = {
    PATH_HEADER: _string(
        "The endpoint path with its parameters filled in, as the HTTP call of the original "
        "API would have it (percent-encoded segments are decoded). The worker routes by "
        "this header, not by the routing key.",
        examples=["/benefits-batch", "/groups/G100/divisions/D1/plan-years-batch"]),
    DATABASE_HEADER: _string("The logical target database, one of the configured names.",
                             examples=["demo"]),
    DRY_RUN_HEADER: {
        "type": ["boolean", "string"], "examples": [True, "true"],
        "description": (
            "Optional; a dry run when present with any value but false, 0, \"false\", "
            "\"0\", \"no\" or \"\". The batch is validated and checked against parents "
            "and stored rows in a transaction that is rolled back, and answered with what "
            "each item would get and debug.dryRun true: nothing is written, no message "
            "record is kept or read for the answer (debug.processedBefore says a real send "
            "of its message_id would get the recorded reply), it is never grouped with "
            "other batches, never retried later (a transient failure is answered 503 at "
            "once) and never dead-lettered. The one x-upsert-* header a producer sets.")},
}

_IDENTITY_HEADER_PROPERTIES: dict[str, Any] = {
    "x-upsert-user-id": _string(
        "The producer's user_id, carried as a header because the broker lets nobody but "
        "the producer's own connection set that property (present when the request had "
        "one)."),
    "x-upsert-user-sig": _string(
        "HMAC-SHA256 (hex) over x-upsert-user-id, path, database and body, so that the "
        "carried name cannot be forged."),
}

_RETRY_HEADER_PROPERTIES: dict[str, Any] = {
    "x-upsert-attempts": _integer(
        "How many attempts the worker has made at the batch: the failed ones on a retry "
        "copy, all of them on a dead letter.", minimum=1),
    "x-upsert-received-at": _string(
        "When the worker first received the batch (ISO 8601). Set on the first retry copy "
        "and kept: orders the writes of a batch without a timestamp property across its "
        "retries.", format="date-time"),
    "x-death": {"type": "array", "description": (
        "Added by the broker each time a retry queue dead-lettered the copy back to "
        f"{REQUEST_QUEUE} (with x-first-death-* and x-last-death-*)."),
        "items": {"type": "object"}},
}

_DEAD_LETTER_HEADER_PROPERTIES: dict[str, Any] = {
    "x-upsert-error-status": _integer(
        "The status of the reply the batch got: the problem's status (400, 401, 403, 404, "
        "413, 415 at once; 503 or 500 after the retries; 500 for a poison message)."),
    "x-upsert-error-title": _string("The problem's title."),
    "x-upsert-error-detail": _string("The problem's detail."),
    "x-upsert-activity-id": _string("The activity id of the outcome (see the reply)."),
    "x-upsert-dead-lettered-at": _string("When the worker dead-lettered the batch (ISO 8601).",
                                         format="date-time"),
}

_REPLY_HEADER_PROPERTIES: dict[str, Any] = {
    "status": _integer("207 for item results, else the problem's status."),
    PATH_HEADER: _string("The request's path header (empty if it had none)."),
    DATABASE_HEADER: _string("The request's vbasoftware-database header (empty if it had "
                             "none)."),
    "activity-id": _string("The outcome's activity id (a ULID), as in the body's "
                           "debug.activityID; the worker's log lines carry it too."),
}

# The AMQP basic properties of a request: message properties, not entries of the headers
# table, so a headers schema cannot hold them.  Documented here and referenced from each
# request's AMQP message binding.
_REQUEST_PROPERTIES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The AMQP basic properties of a batch request (not headers).",
    "properties": {
        "content_type": _string(
            "application/json (parameters such as charset=utf-8 allowed) or absent; "
            "anything else is answered 415.", examples=["application/json"]),
        "content_encoding": _string("Absent, or gzip for a gzip-compressed body.",
                                    enum=["gzip"]),
        "message_id": _string(
            "Recommended. The batch's unique id: a redelivered or re-sent batch whose writes "
            "committed changes nothing and gets the same reply again."),
        "correlation_id": _string("Copied onto the reply (else the message_id is)."),
        "reply_to": _string(
            "The queue for the reply, reached through the default exchange. Without it the "
            f"reply goes to the topic exchange {REPLY_EXCHANGE}."),
        "timestamp": _integer(
            "Recommended. When the producer made the batch (seconds since the epoch). Orders "
            "writes: an item is not applied over a row written by a batch with a later "
            "timestamp (409). Without it, the time the worker first received the batch."),
        "user_id": _string(
            "The producer's broker user name; RabbitMQ checks it equals the connection's "
            "user. Required where the database has a producer list (401 without, 403 for a "
            "producer not on it); also the default entry_User/update_User."),
    },
}


def shared_schemas() -> dict[str, Any]:
    """Every component schema that is not an entity's item schema."""
    return {
        REQUEST_HEADERS: _headers(
            "The headers of a batch request. Headers named x-upsert-* are the worker's own, "
            f"but for {DRY_RUN_HEADER}.",
            _REQUEST_HEADER_PROPERTIES, [PATH_HEADER, DATABASE_HEADER]),
        REQUEST_PROPERTIES: _REQUEST_PROPERTIES_SCHEMA,
        REPLY_HEADERS: _headers("The headers of a reply.", _REPLY_HEADER_PROPERTIES,
                                list(_REPLY_HEADER_PROPERTIES)),
        REPLY: REPLY_SCHEMA,
        RETRY_HEADERS: _headers(
            "The headers of a retry copy: the request's own, and the worker's.",
            {**_REQUEST_HEADER_PROPERTIES, **_RETRY_HEADER_PROPERTIES,
             **_IDENTITY_HEADER_PROPERTIES},
            ["x-upsert-attempts", "x-upsert-received-at"]),
        DEAD_LETTER_HEADERS: _headers(
            "The headers of a dead letter: the request's own (and those of its retries), "
            "and what the worker adds when it dead-letters it.",
            {**_REQUEST_HEADER_PROPERTIES, **_DEAD_LETTER_HEADER_PROPERTIES,
             **_RETRY_HEADER_PROPERTIES, **_IDENTITY_HEADER_PROPERTIES},
            [*_DEAD_LETTER_HEADER_PROPERTIES, "x-upsert-attempts"]),
    }
