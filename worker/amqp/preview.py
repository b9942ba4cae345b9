"""``dlq replay --preview``: what each chosen dead letter would be answered now, from a dry
run, without taking it off ``vbapi.dead``.

Each dead letter is published again as its replay would be (worker/amqp/deadletters.py,
:func:`~worker.amqp.deadletters.replayed_message`), with ``x-upsert-dry-run: true``, a
correlation id of its own and ``reply_to`` an exclusive queue of this command's.  The
worker answers a dry run without writing, recording or dead-lettering anything, so the
queue and the database are left as they were; the dead letters themselves stay held (and
go back in place) by the caller's :meth:`~worker.amqp.deadletters.DeadLetterQueue.holding`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractConnection, AbstractExchange, AbstractIncomingMessage

from schemas.registry import default_registry
from worker.amqp.deadletters import replayed_message
from worker.amqp.letters import DeadLetter
from worker.amqp.topology import declare_topology
from worker.core.wire import DRY_RUN_HEADER, STATUS_HEADER


@dataclass
class Preview:
    """One dead letter and what a dry run of it was answered now: the reply's status
    (header ``status``: 207, or a whole-message problem's status) and body parsed
    (``data``, ``error``, ``debug`` with ``dryRun: true``); both None when no reply came
    within the timeout (``timed_out``) or the copy could not be published (``error``)."""

    letter: DeadLetter
    status: int | None = None
    reply: dict[str, Any] | None = None
    error: str | None = None

    @property
    def timed_out(self) -> bool:
        return self.reply is None and self.error is None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.letter.id, "database": self.letter.database,
                "path": self.letter.path, "status": self.status, "reply": self.reply,
                "timed_out": self.timed_out, "error": self.error}


async def preview_letters(connection: AbstractConnection, letters: Sequence[DeadLetter],
                          delays_s: Sequence[float], timeout_s: float,
                          publish_timeout_s: float = 10.0) -> list[Preview]:
    """A dry run of each letter, its replay copy published on a channel of its own on
    ``connection`` (declaring the topology of the retry ``delays_s``, as a replay does);
    waits at most ``timeout_s`` after the last publish for the replies."""
    previews = {f"preview-{uuid.uuid4().hex}": Preview(letter) for letter in letters}
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    try:
        replies = await channel.declare_queue(exclusive=True, auto_delete=True)
        waiting = set(previews)
        done = asyncio.Event()

        async def on_reply(message: AbstractIncomingMessage) -> None:
            preview = previews.get(message.correlation_id or "")
            if preview is None or message.correlation_id not in waiting:
                return
            _read_reply(preview, message)
            waiting.discard(message.correlation_id)
            if not waiting:
                done.set()

        await replies.consume(on_reply, no_ack=True)
        topology = await declare_topology(channel, list(delays_s))
        for correlation_id, preview in previews.items():
            message = replayed_message(preview.letter)
            message.headers = {**(message.headers or {}), DRY_RUN_HEADER: True}
            message.correlation_id, message.reply_to = correlation_id, replies.name
            if not await _published(topology.request_exchange, preview, message,
                                    publish_timeout_s):
                waiting.discard(correlation_id)
        if waiting:
            try:
                await asyncio.wait_for(done.wait(), timeout_s)
            except TimeoutError:
                pass  # those still waiting have timed_out
    finally:
        if not channel.is_closed:
            await channel.close()
    return list(previews.values())


async def _published(exchange: AbstractExchange, preview: Preview,
                     message: aio_pika.Message, timeout_s: float) -> bool:
    route = default_registry().route(preview.letter.path) if preview.letter.path else None
    try:
        await exchange.publish(message, mandatory=True, timeout=timeout_s,
                               routing_key=route.entity.name if route else "unknown")
    except Exception as e:
        preview.error = f"not published: {type(e).__name__}: {e}"
        return False
    return True


def _read_reply(preview: Preview, message: AbstractIncomingMessage) -> None:
    status = (message.headers or {}).get(STATUS_HEADER)
    preview.status = status if isinstance(status, int) else None
    try:
        body = orjson.loads(message.body)
    except orjson.JSONDecodeError:
        body = {"unreadable": message.body.decode("utf-8", "replace")}
    preview.reply = body if isinstance(body, dict) else {"unreadable": body}
