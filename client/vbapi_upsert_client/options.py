"""What an :class:`~vbapi_upsert_client.UpsertClient` is made with, and what one batch is
sent with; and the check of the AMQP properties' lengths before anything is sent."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, TypedDict

from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from vbapi_upsert_client.errors import PropertyTooLong
from vbapi_upsert_client.wire import MAX_MESSAGE_ID_BYTES


class ClientOptions(TypedDict, total=False):
    """What an :class:`UpsertClient` is made with, all optional."""

    database: str | None            # the database of every batch that names none
    user_id: str | None             # the producer's AMQP user_id on every batch
    timeout_s: float                # per call (default 60)
    publish_timeout_s: float        # for the broker's confirm of a publish (default timeout_s)
    gzip_min_bytes: int             # bodies this long or longer are sent gzip-compressed
    replies: str                    # "direct", "private" or a declared queue's name
    connection: AbstractConnection | None  # an open connection to use instead of url's
    parse_replies: bool             # False: replies' bodies are not looked into
    # Sees every reply this client receives, awaited or not (a replayed batch's second
    # reply, say).
    on_reply: Callable[[AbstractIncomingMessage], None] | None


class SendOptions(TypedDict, total=False):
    """What one batch is sent with, all optional: its identity, and AMQP properties."""

    database: str | None
    message_id: str | None          # chosen if not given; the key of exactly-once
    correlation_id: str | None      # the message_id if not given
    user_id: str | None
    timestamp: dt.datetime | None   # now if not given; orders writes of the same record
    headers: dict[str, Any] | None  # more headers
    dry_run: bool                   # True: answered as it would be, nothing written
    routing_key: str | None         # the entity's name, from the path, if not given
    content_type: str
    content_encoding: str
    expiration: int | str | None
    priority: int | None
    type: str | None
    app_id: str | None


def check_short_strings(properties: dict[str, Any]) -> None:
    """AMQP carries these properties as short strings (at most 255 UTF-8 bytes; a
    message_id is also what the worker records): said here, naming the property, instead
    of as an encoding error from deep inside the AMQP library."""
    for name, value in properties.items():
        if isinstance(value, str):
            size = len(value.encode())
            if size > MAX_MESSAGE_ID_BYTES:
                raise PropertyTooLong(name, size, MAX_MESSAGE_ID_BYTES)
