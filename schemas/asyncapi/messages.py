"""The messages of the AsyncAPI document: a batch per entity, the reply, the retry copy
and the dead letter."""

from __future__ import annotations

from typing import Any

from schemas.asyncapi.names import (
    CORRELATION_ID,
    DEAD_LETTER,
    DEAD_LETTER_HEADERS,
    REPLY,
    REPLY_HEADERS,
    REQUEST_EXCHANGE,
    REQUEST_HEADERS,
    REQUEST_PROPERTIES,
    RETRY_COPY,
    RETRY_HEADERS,
    amqp,
    ref,
)
from schemas.entity import Entity
from schemas.jsonschema import batch_schema
from schemas.statuses import ItemStatus


def entity_message(entity: Entity) -> dict[str, Any]:
    """A batch of ``entity``: its payload is batch_schema(entity), items by reference."""
    payload = batch_schema(entity)
    payload["items"] = ref("components", "schemas", entity.name)
    return {
        "name": entity.name,
        "title": f"{entity.name} batch",
        "summary": f"Create or update {entity.name} records: routing key {entity.name}, "
                   f"header path {entity.path}.",
        "contentType": "application/json",
        "headers": ref("components", "schemas", REQUEST_HEADERS),
        "payload": payload,
        "correlationId": ref("components", "correlationIds", CORRELATION_ID),
        # AMQP message bindings have no routing-key field; an extension says it.
        "bindings": amqp(**{"x-routing-key": entity.name,
                            "x-properties": ref("components", "schemas", REQUEST_PROPERTIES)}),
    }


# What each item status means (schemas/statuses.py): "201 created, 200 updated, ...".
_STATUSES = ", ".join(f"{int(status)} {status.meaning}" for status in ItemStatus)

_BODY_AS_SENT = {"description": "The request's body exactly as sent (gzip too), with its "
                                "content_type and content_encoding."}


def shared_messages() -> dict[str, Any]:
    return {
        REPLY: {
            "name": REPLY,
            "title": "Reply",
            "summary": "The outcome of a batch: 207 item results, or a whole-message problem.",
            "description": (
                "Sent once for every request that reaches an outcome (not for attempts that "
                "will be retried; a redelivered request that already reached one gets the "
                "same reply again). Published persistent, with content_type "
                "application/json and correlation_id = the request's correlation_id, else "
                f"its message_id. In `data`, item i answers request item i: {_STATUSES}. "
                "A whole-message problem (RFC 7807) has `data` null and `error` set."),
            "contentType": "application/json",
            "headers": ref("components", "schemas", REPLY_HEADERS),
            "payload": ref("components", "schemas", REPLY),
            "correlationId": ref("components", "correlationIds", CORRELATION_ID),
            "bindings": amqp(),
        },
        RETRY_COPY: {
            "name": RETRY_COPY,
            "title": "Retry copy",
            "summary": "A batch waiting out the delay before its next attempt.",
            "description": (
                "The request with its body, headers and properties, except user_id (carried "
                "in x-upsert-user-id instead) and expiration; published persistent."),
            "headers": ref("components", "schemas", RETRY_HEADERS),
            "payload": _BODY_AS_SENT,
            "bindings": amqp(),
        },
        DEAD_LETTER: {
            "name": DEAD_LETTER,
            "title": "Dead letter",
            "summary": "A batch that got a whole-message problem, kept for operators.",
            "description": (
                "The request with its body, headers and properties, except user_id (carried "
                "in x-upsert-user-id instead) and expiration, plus the x-upsert-* headers "
                "that say why. `upsert-worker dlq list|show|replay|purge` handle them "
                "without losing or reordering any; replay removes the worker's headers and "
                f"republishes to {REQUEST_EXCHANGE}."),
            "headers": ref("components", "schemas", DEAD_LETTER_HEADERS),
            "payload": _BODY_AS_SENT,
            "bindings": amqp(),
        },
    }
