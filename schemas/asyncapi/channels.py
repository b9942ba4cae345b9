"""The channels and operations of the AsyncAPI document: the exchange producers publish
to, the worker's queues, and who sends and receives what on them."""

from __future__ import annotations

from typing import Any

from schemas.asyncapi.names import (
    DEAD_LETTER,
    DEAD_QUEUE,
    DEFAULT_RETRY_DELAYS,
    REPLY,
    REPLY_EXCHANGE,
    REPLY_QUEUE,
    REQUEST_EXCHANGE,
    REQUEST_PROPERTIES,
    REQUEST_QUEUE,
    RETRY_COPY,
    RETRY_QUEUE,
    amqp,
    ref,
)


def _message_refs(channel: str, names: list[str]) -> list[dict[str, str]]:
    return [ref("channels", channel, "messages", name) for name in names]


def _channel_messages(names: list[str]) -> dict[str, Any]:
    return {name: ref("components", "messages", name) for name in names}


def _queue_binding(name: str | None, **extensions: Any) -> dict[str, Any]:
    queue: dict[str, Any] = {"durable": True, "exclusive": False, "autoDelete": False}
    if name is not None:
        queue = {"name": name, **queue}
    return amqp(**{"is": "queue", "queue": queue, **extensions})


def channels(entities: list[str]) -> dict[str, Any]:
    """The channels: the exchange producers publish to, and every queue."""
    return {
        "requests": _requests(entities),
        "requestQueue": _request_queue(),
        "replyTo": _reply_to(),
        "replies": _replies(),
        "retries": _retries(),
        "deadLetters": _dead_letters(),
    }


def _requests(entities: list[str]) -> dict[str, Any]:
    return {
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
        "bindings": amqp(**{"is": "routingKey", "exchange": {
            "name": REQUEST_EXCHANGE, "type": "topic", "durable": True,
            "autoDelete": False}}),
    }


# A quorum queue that dead-letters at least once (which takes reject-publish overflow):
# the request queue and the retry queues.
_DEAD_LETTERS_AT_LEAST_ONCE = {"x-queue-type": "quorum",
                               "x-dead-letter-strategy": "at-least-once",
                               "x-overflow": "reject-publish"}


def _request_queue() -> dict[str, Any]:
    return {
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
            **_DEAD_LETTERS_AT_LEAST_ONCE,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": DEAD_QUEUE}}),
    }


def _reply_to() -> dict[str, Any]:
    return {
        # The producer names the queue per request; operationReply.address says where.
        "address": None,
        "title": "The request's reply_to queue",
        "description": (
            "The queue named by the request's reply_to, reached through the default "
            "exchange (direct reply-to, amq.rabbitmq.reply-to, works too). If that "
            "queue no longer exists the reply is dropped."),
        "messages": _channel_messages([REPLY]),
    }


def _replies() -> dict[str, Any]:
    return {
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
    }


def _retries() -> dict[str, Any]:
    return {
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
            **_DEAD_LETTERS_AT_LEAST_ONCE,
            "x-message-ttl": "the delay in milliseconds",
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": REQUEST_QUEUE}}),
    }


def _dead_letters() -> dict[str, Any]:
    return {
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
    }


def operations(entities: list[str]) -> dict[str, Any]:
    replies = _message_refs("replyTo", [REPLY])
    return {
        "sendBatch": {
            "action": "send",
            "channel": ref("channels", "requests"),
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
            "bindings": amqp(timestamp=True),
            "reply": {
                "address": {"location": "$message.header#/reply_to",
                            "description": f"The reply_to property; without it the reply "
                                           f"goes to {REPLY_EXCHANGE}."},
                "channel": ref("channels", "replyTo"),
                "messages": replies,
            },
        },
        "receiveReply": {
            "action": "receive",
            "channel": ref("channels", "replyTo"),
            "title": "Receive the reply",
            "summary": "The reply to a batch sent with reply_to.",
            "messages": replies,
        },
        "receiveUnaddressedReply": {
            "action": "receive",
            "channel": ref("channels", "replies"),
            "title": f"Receive replies from {REPLY_QUEUE}",
            "summary": "The replies to batches sent without reply_to.",
            "messages": _message_refs("replies", [REPLY]),
        },
        "receiveDeadLetter": {
            "action": "receive",
            "channel": ref("channels", "deadLetters"),
            "title": "Read dead letters (operators)",
            "summary": "Batches the worker gave up on, with why; best read with "
                       "`upsert-worker dlq`.",
            "messages": _message_refs("deadLetters", [DEAD_LETTER]),
        },
    }
