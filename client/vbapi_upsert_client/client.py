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

Replies are in :mod:`vbapi_upsert_client.reply`, errors in :mod:`vbapi_upsert_client.errors`;
all are importable from :mod:`vbapi_upsert_client`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gzip
import uuid
from collections.abc import Sequence
from typing import Any, Unpack

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import DeliveryError

from vbapi_upsert_client.errors import ProblemError, ReplyLost, UnreadableReply, UpsertTimeout
from vbapi_upsert_client.nodes import Link, Nodes
from vbapi_upsert_client.options import ClientOptions, SendOptions, check_short_strings
from vbapi_upsert_client.reply import ItemResult, Reply
from vbapi_upsert_client.routes import default_routes
from vbapi_upsert_client.wire import (
    DATABASE_HEADER,
    DIRECT_REPLY_TO,
    DRY_RUN_HEADER,
    JSON_CONTENT_TYPE,
    PATH_HEADER,
    REQUEST_EXCHANGE,
)

GZIP_MIN_BYTES = 256 * 1024
# Items per batch of upsert_many by default: well within the worker's item and byte limits
# for every entity, large enough that a batch's fixed costs do not matter.
MANY_BATCH_SIZE = 1000


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
                    error = UnreadableReply(f"unreadable reply to batch {message_id}: {e!r}")
                    error.__cause__ = e
                    future.set_exception(error)
        if self._acks:
            try:
                await message.ack()
            except Exception:
                pass  # channel gone: the reply comes again, and is handled again alike

    async def send(self, path: str | None, items: Sequence[Any] | bytes,
                   **options: Unpack[SendOptions]) -> asyncio.Future[Reply]:
        """Publish one batch and return, once the broker confirmed it, a future of its reply.

        ``items`` is a list (encoded as JSON) or the body's bytes as they are.  With
        ``dry_run=True`` the worker answers what each item would get (201, 200, 400, 404,
        409) and writes and records nothing (``Reply.dry_run``).  The AMQP
        properties among the ``options`` (content_type, content_encoding, expiration, ...)
        go on the message as they are.
        """
        properties: dict[str, Any] = dict(options)
        database = properties.pop("database", None)
        user_id = properties.pop("user_id", None)
        timestamp = properties.pop("timestamp", None)
        headers = properties.pop("headers", None)
        dry_run = properties.pop("dry_run", False)
        routing_key = properties.pop("routing_key", None)
        body = items if isinstance(items, bytes) else orjson.dumps(items)
        message_id = properties.pop("message_id", None) or uuid.uuid4().hex
        correlation_id = properties.pop("correlation_id", None) or message_id
        check_short_strings({**properties, "message_id": message_id,
                              "correlation_id": correlation_id,
                              "user_id": user_id or self.user_id})
        if len(body) >= self.gzip_min_bytes and "content_encoding" not in properties:
            body = gzip.compress(body, compresslevel=5)
            properties["content_encoding"] = "gzip"
        all_headers = dict(headers or {})
        if dry_run:  # validated and checked against the stored rows; nothing written
            all_headers[DRY_RUN_HEADER] = True
        if path is not None:  # None: no path header at all (the worker answers 400)
            all_headers.setdefault(PATH_HEADER, path)
        target = database or self.database
        if target is not None:
            all_headers.setdefault(DATABASE_HEADER, target)
        properties.setdefault("content_type", JSON_CONTENT_TYPE)
        if routing_key is None:
            routing_key = default_routes().routing_key(path)
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
        of that channel too (the worker's worker/amqp/nodes.py says when)."""
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

