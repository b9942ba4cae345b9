"""The AsyncAPI 3.0.0 document of the worker's AMQP interface.  Pure: a registry in, YAML out.

It describes the worker as its producers see it: they *send* a batch to the topic exchange
``vbapi`` (one message per entity, routing key = the entity name) and *receive* the reply,
on their ``reply_to`` queue or on ``vbapi.replies``.  Operators *receive* dead letters from
``vbapi.dead``; the retry queues and the request queue are documented as channels only
(the worker alone uses them).  ``upsert-worker docs asyncapi`` writes the result to
``docs/asyncapi.yaml``.

Payloads come from :mod:`schemas.jsonschema`.  Each entity's item schema is written once,
under ``components/schemas/<Entity>``, and referenced: 730 inline copies would make the
document several times larger.

The exchange, queue and header names below repeat those of ``worker/`` on purpose: the
worker depends on ``schemas``, not the other way round, and importing it here would drag
aio-pika into a pure module.  ``tests/test_asyncapi.py`` checks that both agree.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from schemas.entity import Entity
from schemas.jsonschema import REPLY_SCHEMA, batch_schema
from schemas.registry import Registry

ASYNCAPI_VERSION = "3.0.0"
TITLE = "vbapi-upsert-worker"
VERSION = "0.1.0"  # [project] version in pyproject.toml
AMQP_BINDING_VERSION = "0.3.0"

REQUEST_EXCHANGE = "vbapi"
REQUEST_QUEUE = "vbapi.requests"
REPLY_EXCHANGE = "vbapi.replies"
REPLY_QUEUE = "vbapi.replies"
DEAD_QUEUE = "vbapi.dead"
RETRY_QUEUE = "vbapi.retry.{delay}s"
# retry.delays_s by default, formatted as the queue names format them (%g).
DEFAULT_RETRY_DELAYS = ("1", "5", "30", "120")

PATH_HEADER = "path"
DATABASE_HEADER = "vbasoftware-database"

# Names of the non-entity components.  Entity names share the same maps, so a clash is
# refused rather than silently overwriting one with the other.
REQUEST_HEADERS = "RequestHeaders"
REQUEST_PROPERTIES = "RequestProperties"
REPLY_HEADERS = "ReplyHeaders"
REPLY = "Reply"
RETRY_HEADERS = "RetryHeaders"
DEAD_LETTER_HEADERS = "DeadLetterHeaders"
RETRY_COPY = "RetryCopy"
DEAD_LETTER = "DeadLetter"
CORRELATION_ID = "correlationId"


def _ref(*pointer: str) -> dict[str, str]:
    """A local ``$ref``, its segments escaped as JSON Pointer requires."""
    escaped = (p.replace("~", "~0").replace("/", "~1") for p in pointer)
    return {"$ref": "#/" + "/".join(escaped)}


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


def _shared_schemas() -> dict[str, Any]:
    """Every component schema that is not an entity's item schema."""
    return {
        REQUEST_HEADERS: _headers(
            "The headers of a batch request. Headers named x-upsert-* are the worker's own.",
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


# --- messages ----------------------------------------------------------------------------

def _amqp(**binding: Any) -> dict[str, Any]:
    return {"amqp": {**binding, "bindingVersion": AMQP_BINDING_VERSION}}


def _entity_message(entity: Entity) -> dict[str, Any]:
    """A batch of ``entity``: its payload is batch_schema(entity), items by reference."""
    payload = batch_schema(entity)
    payload["items"] = _ref("components", "schemas", entity.name)
    return {
        "name": entity.name,
        "title": f"{entity.name} batch",
        "summary": f"Create or update {entity.name} records: routing key {entity.name}, "
                   f"header path {entity.path}.",
        "contentType": "application/json",
        "headers": _ref("components", "schemas", REQUEST_HEADERS),
        "payload": payload,
        "correlationId": _ref("components", "correlationIds", CORRELATION_ID),
        # AMQP message bindings have no routing-key field; an extension says it.
        "bindings": _amqp(**{"x-routing-key": entity.name,
                             "x-properties": _ref("components", "schemas",
                                                  REQUEST_PROPERTIES)}),
    }


_BODY_AS_SENT = {"description": "The request's body exactly as sent (gzip too), with its "
                                "content_type and content_encoding."}


def _shared_messages() -> dict[str, Any]:
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
                "its message_id. In `data`, item i answers request item i: 201 created, "
                "200 updated, 400 invalid, 404 parent missing, 409 a newer batch wrote the "
                "record, 500 unexpected failure of that item. A whole-message problem "
                "(RFC 7807) has `data` null and `error` set."),
            "contentType": "application/json",
            "headers": _ref("components", "schemas", REPLY_HEADERS),
            "payload": _ref("components", "schemas", REPLY),
            "correlationId": _ref("components", "correlationIds", CORRELATION_ID),
            "bindings": _amqp(),
        },
        RETRY_COPY: {
            "name": RETRY_COPY,
            "title": "Retry copy",
            "summary": "A batch waiting out the delay before its next attempt.",
            "description": (
                "The request with its body, headers and properties, except user_id (carried "
                "in x-upsert-user-id instead) and expiration; published persistent."),
            "headers": _ref("components", "schemas", RETRY_HEADERS),
            "payload": _BODY_AS_SENT,
            "bindings": _amqp(),
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
            "headers": _ref("components", "schemas", DEAD_LETTER_HEADERS),
            "payload": _BODY_AS_SENT,
            "bindings": _amqp(),
        },
    }


# --- channels and operations -------------------------------------------------------------

def _message_refs(channel: str, names: list[str]) -> list[dict[str, str]]:
    return [_ref("channels", channel, "messages", name) for name in names]


def _channel_messages(names: list[str]) -> dict[str, Any]:
    return {name: _ref("components", "messages", name) for name in names}


def _queue_binding(name: str | None, **extensions: Any) -> dict[str, Any]:
    queue: dict[str, Any] = {"durable": True, "exclusive": False, "autoDelete": False}
    if name is not None:
        queue = {"name": name, **queue}
    return _amqp(**{"is": "queue", "queue": queue, **extensions})


def _channels(entities: list[str]) -> dict[str, Any]:
    return {
        "requests": {
            # The routing key differs per message (the entity name), so the channel has no
            # fixed address, and no parameter either: each message says its own key.
            "address": None,
            "title": f"Exchange {REQUEST_EXCHANGE}",
            "description": (
                f"Publish a batch to the topic exchange `{REQUEST_EXCHANGE}` with routing key "
                "= the entity name (the message's name, and its `x-routing-key`). The worker "
                f"consumes from the durable queue `{REQUEST_QUEUE}`, bound to "
                f"`{REQUEST_EXCHANGE}` for every routing key (`#`), and routes by the `path` "
                "header. The worker declares every exchange and queue at start; producers "
                "need not declare anything."),
            "messages": _channel_messages(entities),
            "bindings": _amqp(**{"is": "routingKey", "exchange": {
                "name": REQUEST_EXCHANGE, "type": "topic", "durable": True,
                "autoDelete": False}}),
        },
        "requestQueue": {
            "address": REQUEST_QUEUE,
            "title": f"Queue {REQUEST_QUEUE}",
            "description": (
                f"The worker's queue: every batch published to `{REQUEST_EXCHANGE}`, and "
                "retry copies coming back from the retry queues. A quorum queue, for its "
                "x-delivery-count header: a batch that keeps crashing workers is answered "
                "500 and dead-lettered after retry.max_deliveries deliveries. Nobody but the "
                "worker consumes it. What the broker itself takes off it (a message over the "
                "quorum queue's delivery limit, 20 by default from RabbitMQ 4.0) is "
                f"dead-lettered to `{DEAD_QUEUE}`, at least once."),
            "bindings": _queue_binding(REQUEST_QUEUE, **{"x-arguments": {
                "x-queue-type": "quorum",
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": DEAD_QUEUE,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish"}}),
        },
        "replyTo": {
            # The producer names the queue per request; operationReply.address says where.
            "address": None,
            "title": "The request's reply_to queue",
            "description": (
                "The queue named by the request's reply_to, reached through the default "
                "exchange (direct reply-to, amq.rabbitmq.reply-to, works too). If that "
                "queue no longer exists the reply is dropped."),
            "messages": _channel_messages([REPLY]),
        },
        "replies": {
            "address": REPLY_QUEUE,
            "title": f"Queue {REPLY_QUEUE}",
            "description": (
                "Replies to requests without reply_to: the worker publishes them to the topic "
                f"exchange `{REPLY_EXCHANGE}` with routing key = the entity name (`unknown` "
                f"where the path matches none), which it binds to this durable queue with "
                f"`#`. Bind a queue of your own to `{REPLY_EXCHANGE}` to receive only some "
                "entities. A quorum queue, so that a cluster keeps it when a node dies."),
            "messages": _channel_messages([REPLY]),
            "bindings": _queue_binding(REPLY_QUEUE, **{
                "x-arguments": {"x-queue-type": "quorum"},
                "x-exchange": {"name": REPLY_EXCHANGE, "type": "topic", "durable": True,
                               "autoDelete": False}}),
        },
        "retries": {
            "address": RETRY_QUEUE,
            "title": "Retry queues",
            "description": (
                "A batch whose attempt failed transiently (database or broker unreachable, "
                "deadlock, serialization failure) or unexpectedly is copied through the "
                "default exchange to the retry queue of its attempt, one per configured "
                "delay (retry.delays_s). The queue's message TTL is the delay; then the "
                f"broker dead-letters the copy through the default exchange back to "
                f"`{REQUEST_QUEUE}`, so a pending retry survives a restart of the worker. "
                "After the last delay the batch is answered (503, or 500 after unexpected "
                "failures) and dead-lettered. Only the worker uses these queues: quorum "
                "queues that dead-letter at least once, so that a copy expiring while "
                f"`{REQUEST_QUEUE}` elects a leader is kept until it has it."),
            "parameters": {"delay": {
                "description": "The delay in seconds, formatted like %g.",
                "default": DEFAULT_RETRY_DELAYS[0],
                "examples": list(DEFAULT_RETRY_DELAYS)}},
            "messages": _channel_messages([RETRY_COPY]),
            "bindings": _queue_binding(None, **{"x-arguments": {
                "x-queue-type": "quorum",
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
                "x-message-ttl": "the delay in milliseconds",
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": REQUEST_QUEUE}}),
        },
        "deadLetters": {
            "address": DEAD_QUEUE,
            "title": f"Queue {DEAD_QUEUE}",
            "description": (
                "Batches answered with a whole-message problem: at once for 4xx, after the "
                "retries for 503 and 500, after retry.max_deliveries deliveries for a poison "
                "message (500). The worker publishes the dead letter, confirmed by "
                "the broker, before it acknowledges the request. Also what the broker "
                f"dead-letters from `{REQUEST_QUEUE}` (x-first-death-reason, no "
                "x-upsert-error-* headers). A classic queue, whatever the vhost's default "
                "type: the dlq commands rely on it."),
            "messages": _channel_messages([DEAD_LETTER]),
            "bindings": _queue_binding(DEAD_QUEUE,
                                       **{"x-arguments": {"x-queue-type": "classic"}}),
        },
    }


def _operations(entities: list[str]) -> dict[str, Any]:
    replies = _message_refs("replyTo", [REPLY])
    return {
        "sendBatch": {
            "action": "send",
            "channel": _ref("channels", "requests"),
            "title": "Send a batch",
            "summary": "Create or update records of one entity: the AMQP form of the API's "
                       "PUT <batch path>.",
            "description": (
                "One message per batch, with the headers path and vbasoftware-database, a "
                "JSON array of items as the body, and the properties of "
                f"`components/schemas/{REQUEST_PROPERTIES}`. Acknowledged by the worker only "
                "once its writes are committed and its reply (or dead letter) is confirmed "
                "by the broker."),
            "messages": _message_refs("requests", entities),
            "bindings": _amqp(timestamp=True),
            "reply": {
                "address": {"location": "$message.header#/reply_to",
                            "description": f"The reply_to property; without it the reply "
                                           f"goes to {REPLY_EXCHANGE}."},
                "channel": _ref("channels", "replyTo"),
                "messages": replies,
            },
        },
        "receiveReply": {
            "action": "receive",
            "channel": _ref("channels", "replyTo"),
            "title": "Receive the reply",
            "summary": "The reply to a batch sent with reply_to.",
            "messages": replies,
        },
        "receiveUnaddressedReply": {
            "action": "receive",
            "channel": _ref("channels", "replies"),
            "title": f"Receive replies from {REPLY_QUEUE}",
            "summary": "The replies to batches sent without reply_to.",
            "messages": _message_refs("replies", [REPLY]),
        },
        "receiveDeadLetter": {
            "action": "receive",
            "channel": _ref("channels", "deadLetters"),
            "title": "Read dead letters (operators)",
            "summary": "Batches the worker gave up on, with why; best read with "
                       "`upsert-worker dlq`.",
            "messages": _message_refs("deadLetters", [DEAD_LETTER]),
        },
    }


# --- the document ------------------------------------------------------------------------

def _description(count: int) -> str:
    # Markdown with no indented lines: YAML then keeps it readable (no escaped "\n").
    return (
        f'Create-or-update batches for the {count} "Create or Update Batch" endpoints of the '
        "VBA API, over AMQP 0-9-1 (RabbitMQ), written to PostgreSQL with the 207 semantics "
        "of the HTTP API.\n\n"
        f"- producers -> `{REQUEST_EXCHANGE}` (topic, routing key = entity) -> "
        f"`{REQUEST_QUEUE}` -> worker\n"
        "- worker -> default exchange -> the request's `reply_to` queue\n"
        f"- worker -> `{REPLY_EXCHANGE}` (topic) -> `{REPLY_QUEUE}`, for requests without "
        "`reply_to`\n"
        f"- worker -> default exchange -> `vbapi.retry.<delay>s` -> (TTL) -> `{REQUEST_QUEUE}`\n"
        f"- worker -> default exchange -> `{DEAD_QUEUE}` (dead letters)\n\n"
        "Generated by `upsert-worker docs asyncapi` from `schemas/vbapi.json`; do not edit "
        "by hand.")


def _check_names(entities: list[str], shared: dict[str, Any], kind: str) -> None:
    clash = sorted(set(entities) & set(shared))
    if clash:
        raise ValueError(f"entity names clash with the document's own {kind}: {clash}")


def render_asyncapi(registry: Registry) -> str:
    """The AsyncAPI 3.0.0 document of ``registry``, as YAML text (deterministic)."""
    names = [e.name for e in registry.entities]
    shared_schemas, shared_messages = _shared_schemas(), _shared_messages()
    _check_names(names, shared_schemas, "schemas")
    _check_names(names, shared_messages, "messages")
    schemas = {**shared_schemas, **{e.name: batch_schema(e)["items"] for e in registry.entities}}
    messages = {**shared_messages, **{e.name: _entity_message(e) for e in registry.entities}}
    doc = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {"title": TITLE, "version": VERSION, "description": _description(len(names))},
        "servers": {"broker": {
            "host": "{host}", "protocol": "amqp", "protocolVersion": "0-9-1",
            "description": "The RabbitMQ broker named by [amqp] url (a list for several "
                           "nodes); any virtual host.",
            "variables": {"host": {"default": "127.0.0.1:5672",
                                   "description": "host:port of a broker node"}}}},
        "defaultContentType": "application/json",
        "channels": _channels(names),
        "operations": _operations(names),
        "components": {
            "schemas": schemas,
            "messages": messages,
            "correlationIds": {CORRELATION_ID: {
                "description": "The AMQP property correlation_id: the request's own, copied "
                               "onto its reply (else the request's message_id is).",
                "location": "$message.header#/correlation_id"}},
        },
    }
    # Through JSON and back: a fresh tree, so that YAML writes no anchors for dicts the
    # schemas share (e.g. REPLY_SCHEMA's parts), and only JSON values get in.
    doc = json.loads(json.dumps(doc))
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)
