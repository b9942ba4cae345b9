"""The client library for producers: publish batches, get each item's answer.

    async with UpsertClient("amqp://guest:guest@127.0.0.1/%2F", database="demo") as client:
        reply = await client.upsert("/benefits-batch", items)
        reply.raise_for_status()          # or look at reply.items / reply.problem

One connection and one channel carry many concurrent batches: every publish is confirmed
by the broker, and replies come back on one consumer (RabbitMQ's direct reply-to, or a
private queue), matched to their call by correlation id.  A call that times out raises
:class:`UpsertTimeout`: its batch was confirmed by the broker and stays queued, so it
will be applied; publishing it again with the same ``message_id`` gets its reply and is
never applied twice.

Replies and errors are in :mod:`worker.client_reply`, and importable from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gzip
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypedDict, Unpack

import aio_pika
import orjson
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage
from aio_pika.exceptions import DeliveryError

from schemas.registry import default_registry
from worker.amqp.nodes import Link, Nodes
from worker.amqp.topology import REQUEST_EXCHANGE
from worker.client_reply import (
    ItemResult,
    ItemsFailed,
    Problem,
    ProblemError,
    PropertyTooLong,
    Reply,
    ReplyLost,
    UpsertError,
    UpsertTimeout,
)
from worker.core.wire import DATABASE_HEADER, JSON_CONTENT_TYPE, MAX_MESSAGE_ID_BYTES, PATH_HEADER

__all__ = ["ItemResult", "ItemsFailed", "Problem", "ProblemError", "PropertyTooLong", "Reply",
           "ReplyLost", "UpsertClient", "UpsertError", "UpsertTimeout"]

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
GZIP_MIN_BYTES = 256 * 1024
# Items per batch of upsert_many by default: well within the worker's item and byte limits
# for every entity, large enough that a batch's fixed costs do not matter.
MANY_BATCH_SIZE = 1000


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
    routing_key: str | None         # the entity's name, from the path, if not given
    content_type: str
    content_encoding: str
    expiration: int | str | None
    priority: int | None
    type: str | None
    app_id: str | None


class UpsertClient:
    """Publishes batches to the worker over one AMQP connection; see the module docstring.

    ``replies`` is ``"direct"`` (RabbitMQ's direct reply-to: no queue to declare),
    ``"private"`` (an exclusive queue of this client's), or the name of a queue the caller
    declared (a durable one, say, whose replies are acknowledged only once handled, so
    that none is lost with a dropped connection).
    """

    def __init__(self, url: str | Sequence[str], **options: Unpack[ClientOptions]) -> None:
        replies = options.get("replies", "direct")
        if not replies:
            raise ValueError("replies must be 'direct', 'private' or a queue name")
        # One node's URL, or a cluster's: the first that answers, failing over to the others.
        self.urls = [url] if isinstance(url, str) else list(url)
        self.database = options.get("database")
        self.user_id = options.get("user_id")
        self.timeout_s = options.get("timeout_s", 60.0)
        self.publish_timeout_s = options.get("publish_timeout_s", self.timeout_s)
        self.gzip_min_bytes = options.get("gzip_min_bytes", GZIP_MIN_BYTES)
        self.replies = replies
        self.connection = options.get("connection")
        self.parse_replies = options.get("parse_replies", True)
        self.on_reply = options.get("on_reply")
        self._link: Link | None = None
        self._waiting: dict[str, tuple[asyncio.Future[Reply], str]] = {}
        self.reply_to = DIRECT_REPLY_TO
        self._acks = False
        self._refused = False
        self._reopening = asyncio.Lock()

    async def __aenter__(self) -> UpsertClient:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def failovers(self) -> int:
        """Broker connections this client lost and made again."""
        return self._link.failovers if self._link is not None else 0

    async def open(self) -> None:
        if self.connection is not None:  # the caller's: used as it is, never failed over
            await self._open_channel(self.connection)
            return
        self._link = Link(Nodes(self.urls, timeout_s=self.timeout_s,
                                connection_name="vbapi-upsert-client"), self._open_channel)
        self.connection = await self._link.open()

    async def _open_channel(self, connection: aio_pika.abc.AbstractConnection) -> None:
        """The publishing channel and its reply consumer, on a new connection (a failover)
        or again after the broker closed the channel (a publish to a missing exchange, a
        refused user_id).  Replies to a named queue come on the new consumer; those the
        old one would have carried otherwise are lost: their calls fail with ReplyLost."""
        if self.replies in ("direct", "private"):
            for correlation_id, (future, message_id) in list(self._waiting.items()):
                if not future.done():
                    future.set_exception(ReplyLost(message_id))
                del self._waiting[correlation_id]
        self.connection = connection
        self.channel = await connection.channel(publisher_confirms=True)
        if self.replies == "direct":
            # Consumed before the first publish, on the publishing channel, with no acks:
            # what RabbitMQ asks of a direct reply-to consumer.
            queue = await self.channel.get_queue(DIRECT_REPLY_TO, ensure=False)
        elif self.replies == "private":
            queue = await self.channel.declare_queue(exclusive=True, auto_delete=True)
        else:
            # Declared passively, not merely named: on a robust connection only a declared
            # queue gets its consumer back after a reconnect.
            queue = await self.channel.declare_queue(self.replies, passive=True)
        self.reply_to = queue.name
        self._acks = self.replies not in ("direct", "private")
        await queue.consume(self._on_reply, no_ack=not self._acks)
        self.exchange = await self.channel.get_exchange(REQUEST_EXCHANGE, ensure=False)

    async def close(self) -> None:
        for future, _ in self._waiting.values():
            future.cancel()
        if self._link is not None:
            await self._link.close()

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        if self.on_reply is not None:
            self.on_reply(message)
        waiting = self._waiting.pop(message.correlation_id or "", None)
        if waiting is not None:  # else: a call that timed out, or another producer's id
            future, message_id = waiting
            if not future.done():
                try:
                    future.set_result(Reply.parse(message, message_id,
                                                  body=self.parse_replies))
                except (ValueError, TypeError, KeyError, AttributeError) as e:
                    future.set_exception(UpsertError(f"unreadable reply: {e}"))
        if self._acks:
            try:
                await message.ack()
            except Exception:
                pass  # channel gone: the reply comes again, and is handled again alike

    async def send(self, path: str | None, items: Sequence[Any] | bytes,
                   **options: Unpack[SendOptions]) -> asyncio.Future[Reply]:
        """Publish one batch and return, once the broker confirmed it, a future of its reply.

        ``items`` is a list (encoded as JSON) or the body's bytes as they are.  The AMQP
        properties among the ``options`` (content_type, content_encoding, expiration, ...)
        go on the message as they are.
        """
        properties: dict[str, Any] = dict(options)
        database = properties.pop("database", None)
        user_id = properties.pop("user_id", None)
        timestamp = properties.pop("timestamp", None)
        headers = properties.pop("headers", None)
        routing_key = properties.pop("routing_key", None)
        body = items if isinstance(items, bytes) else orjson.dumps(items)
        message_id = properties.pop("message_id", None) or uuid.uuid4().hex
        correlation_id = properties.pop("correlation_id", None) or message_id
        _check_short_strings({**properties, "message_id": message_id,
                              "correlation_id": correlation_id,
                              "user_id": user_id or self.user_id})
        if len(body) >= self.gzip_min_bytes and "content_encoding" not in properties:
            body = gzip.compress(body, compresslevel=5)
            properties["content_encoding"] = "gzip"
        all_headers = dict(headers or {})
        if path is not None:  # None: no path header at all (the worker answers 400)
            all_headers.setdefault(PATH_HEADER, path)
        target = database or self.database
        if target is not None:
            all_headers.setdefault(DATABASE_HEADER, target)
        properties.setdefault("content_type", JSON_CONTENT_TYPE)
        if routing_key is None:
            route = default_registry().route(path or "")
            routing_key = route.entity.name if route else "unknown"
        if self._link is not None:
            await self._link.ready()  # the connection, made again if it was lost
        await self._usable_channel()
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[correlation_id] = (future, message_id)
        try:
            await self.exchange.publish(aio_pika.Message(
                body=body, headers=all_headers, message_id=message_id,
                correlation_id=correlation_id, reply_to=self.reply_to,
                user_id=user_id or self.user_id,
                timestamp=timestamp or dt.datetime.now(dt.UTC),
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT, **properties),
                routing_key=routing_key, timeout=self.publish_timeout_s)
        except BaseException as e:
            self._waiting.pop(correlation_id, None)
            # Refused by the broker (a negative confirm): publish again on a new channel.
            self._refused = self._refused or isinstance(e, DeliveryError)
            raise
        return future

    async def _usable_channel(self) -> None:
        """The channel, opened again if the broker closed it (a robust one comes back by
        itself) or refused a publish on it: RabbitMQ 3.10 may refuse every later publish
        of that channel too (worker/amqp/nodes.py)."""
        async with self._reopening:
            closed = self.channel.is_closed and not isinstance(self.channel,
                                                               aio_pika.RobustChannel)
            if closed or self._refused:
                self._refused = False
                with contextlib.suppress(Exception):
                    await self.channel.close()
                assert self.connection is not None
                await self._open_channel(self.connection)

    async def upsert(self, path: str, items: Sequence[Any] | bytes, *,
                     timeout_s: float | None = None, **options: Unpack[SendOptions]) -> Reply:
        """Publish one batch and wait for its reply (see :meth:`send` for the options)."""
        # Chosen here, not in send(), so that a timeout can name it (None means: choose).
        message_id = options["message_id"] = options.get("message_id") or uuid.uuid4().hex
        future = await self.send(path, items, **options)
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            self._waiting.pop(options.get("correlation_id") or message_id, None)
            raise UpsertTimeout(message_id, timeout) from None

    async def upsert_many(self, path: str, items: Sequence[Any], *,
                          batch_size: int = MANY_BATCH_SIZE, concurrency: int = 8,
                          **options: Unpack[SendOptions]) -> list[ItemResult]:
        """Split ``items`` into batches of ``batch_size``, send them concurrently, and return
        every item's result in the order of ``items``.  Batch i gets the message id
        ``<message_id>-<i>``, so calling again with the same message_id is never applied
        twice.  A whole-message error of any batch raises ProblemError."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        base = options.pop("message_id", None) or uuid.uuid4().hex
        chunks = [items[at:at + batch_size] for at in range(0, len(items), batch_size)]
        limit = asyncio.Semaphore(concurrency)

        async def one(index: int, chunk: Sequence[Any]) -> list[ItemResult]:
            chunk_options: SendOptions = {**options, "message_id": f"{base}-{index}"}
            async with limit:
                reply = await self.upsert(path, chunk, **chunk_options)
            if reply.problem is not None:
                raise ProblemError(reply.problem)
            return reply.items

        answered = await asyncio.gather(*(one(i, c) for i, c in enumerate(chunks)))
        return [result for chunk in answered for result in chunk]


def _check_short_strings(properties: dict[str, Any]) -> None:
    """AMQP carries these properties as short strings (at most 255 UTF-8 bytes; a
    message_id is also what the worker records): said here, naming the property, instead
    of as an encoding error from deep inside the AMQP library."""
    for name, value in properties.items():
        if isinstance(value, str):
            size = len(value.encode())
            if size > MAX_MESSAGE_ID_BYTES:
                raise PropertyTooLong(name, size, MAX_MESSAGE_ID_BYTES)
