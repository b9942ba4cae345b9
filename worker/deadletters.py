"""The dead-letter queue ``vbapi.dead``: list, show, replay, purge, without losing or
reordering a dead letter.

AMQP 0-9-1 has no "peek".  Every command therefore *holds* the queue: it consumes every
dead letter with manual acknowledgement and no prefetch limit on a channel of its own,
acknowledges only those it has dealt with (confirmed republished, or purged), and closes
the channel.  Closing hands every other one back, and a classic queue puts requeued
messages back at their original positions, so the queue afterwards holds the rest in the
same order (the tests check this with thousands).  If the command dies half way the
broker does the same, so a dead letter is never lost; at worst one that was republished
but not yet acknowledged stays and is replayed twice, which ``message_id`` makes harmless.

While a command holds them, the dead letters are invisible to a second such command.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from schemas.registry import default_registry
from worker.batch import DATABASE_HEADER, PATH_HEADER, decode_body
from worker.identity import USER_HEADER
from worker.settings import Settings
from worker.topology import DEAD_QUEUE, declare_topology

ID_HEADER = "x-upsert-activity-id"
# What the worker added when it dead-lettered the batch, and what the broker added on the
# way: a replayed batch starts afresh without them.  The signed identity headers stay.
_DROPPED_HEADERS = frozenset({
    "x-upsert-error-status", "x-upsert-error-title", "x-upsert-error-detail",
    "x-upsert-attempts", "x-upsert-dead-lettered-at", ID_HEADER, "x-upsert-received-at",
    "x-delivery-count", "x-death",
})
_DROPPED_PREFIXES = ("x-first-death-", "x-last-death-")
# A holding read stops when the queue's count is reached, or when nothing came for this
# long (another command may hold some of them).
IDLE_STOP_S = 2.0
PROGRESS_EVERY = 500

Progress = Callable[[str], None]


@dataclass
class DeadLetter:
    """One dead-lettered batch as read from the queue (position 1 is the head)."""

    id: str
    position: int
    database: str | None
    path: str | None
    entity: str | None
    item_count: int | None
    error_status: int | None
    error_title: str | None
    error_detail: str | None
    attempts: int | None
    dead_lettered_at: str | None
    user_id: str | None
    properties: dict[str, Any]
    headers: dict[str, Any]
    body: bytes
    message: AbstractIncomingMessage = field(repr=False)

    def row(self) -> dict[str, Any]:
        """The summary ``dlq list`` shows."""
        return {"id": self.id, "database": self.database, "path": self.path,
                "entity": self.entity, "items": self.item_count,
                "status": self.error_status, "title": self.error_title,
                "attempts": self.attempts, "dead_lettered_at": self.dead_lettered_at}

    def details(self, settings: Settings) -> dict[str, Any]:
        """Everything, the body decoded as JSON where it is JSON (``dlq show``)."""
        return {**self.row(), "position": self.position, "detail": self.error_detail,
                "carried_user_id": self.user_id, "properties": self.properties,
                "headers": self.headers, "body": _readable_body(self, settings)}


@dataclass
class Outcome:
    """What ``replay`` or ``purge`` did: ids done, ids not found, failures by id."""

    done: list[DeadLetter] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


class Holding:
    """Every dead letter currently in the queue, held unacknowledged on one channel."""

    def __init__(self, letters: list[DeadLetter], connection: AbstractConnection) -> None:
        self.letters = letters
        self.connection = connection

    def select(self, *, all_: bool = False, ids: Iterable[str] = (),
               status: int | None = None) -> tuple[list[DeadLetter], list[str]]:
        """The chosen dead letters in queue order, and the requested ids not found."""
        if all_:
            return list(self.letters), []
        if status is not None:
            return [d for d in self.letters if d.error_status == status], []
        wanted = list(dict.fromkeys(ids))
        chosen = set(wanted)
        found = [d for d in self.letters if d.id in chosen]
        known = {d.id for d in found}
        return found, [i for i in wanted if i not in known]


@contextlib.asynccontextmanager
async def holding(settings: Settings, progress: Progress | None = None
                  ) -> AsyncIterator[Holding]:
    """Hold every dead letter for the block; those not acknowledged go back, in order."""
    # A plain connection: were it lost, the held dead letters go back to the queue, and
    # the command must fail rather than reconnect and carry on with stale deliveries.
    connection = await aio_pika.connect(
        settings.amqp.url.get_secret_value(), timeout=settings.amqp.connect_timeout_s,
        client_properties={"connection_name": "upsert-worker dlq"})
    async with connection:
        channel = await connection.channel()
        # No prefetch limit: the broker sends the whole queue at once, in queue order.
        await channel.set_qos(prefetch_count=0)
        queue = await channel.declare_queue(DEAD_QUEUE, durable=True)
        result = queue.declaration_result
        expected = (result.message_count or 0) if result is not None else 0
        received: list[AbstractIncomingMessage] = []
        arrived = asyncio.Event()

        async def on_message(message: AbstractIncomingMessage) -> None:
            received.append(message)
            arrived.set()
            if progress and len(received) % PROGRESS_EVERY == 0:
                progress(f"read {len(received)}/{expected} dead letters")

        if expected:
            tag = await queue.consume(on_message)
            while len(received) < expected:
                arrived.clear()
                try:
                    await asyncio.wait_for(arrived.wait(), IDLE_STOP_S)
                except TimeoutError:
                    break
            await queue.cancel(tag)
        # Delivery tags grow in delivery order, which is queue order.
        received.sort(key=lambda message: message.delivery_tag or 0)
        letters = _dead_letters(received, settings)
        try:
            yield Holding(letters, connection)
        finally:
            # Closing the channel requeues everything still unacknowledged, in place.
            with contextlib.suppress(Exception):
                await channel.close()


async def list_dead_letters(settings: Settings, progress: Progress | None = None
                            ) -> list[DeadLetter]:
    """Every dead letter in queue order; the queue is left exactly as it was."""
    async with holding(settings, progress) as held:
        return held.letters


async def replay(settings: Settings, *, all_: bool = False, ids: Iterable[str] = (),
                 status: int | None = None, dry_run: bool = False,
                 progress: Progress | None = None) -> Outcome:
    """Republish the chosen dead letters to ``vbapi`` as their producers sent them, and
    remove each from the queue once the broker confirmed its republish."""
    async with holding(settings, progress) as held:
        chosen, missing = held.select(all_=all_, ids=ids, status=status)
        outcome = Outcome(missing=missing)
        if dry_run:
            outcome.done = chosen
            return outcome
        channel = await held.connection.channel(publisher_confirms=True,
                                                on_return_raises=True)
        # The request queue must exist and be bound, or the republish would be dropped
        # as unroutable; `mandatory` below makes that an error rather than a loss.
        topology = await declare_topology(channel, settings.retry.delays_s)
        registry = default_registry()
        for n, letter in enumerate(chosen, 1):
            route = registry.route(letter.path) if letter.path else None
            try:
                await topology.request_exchange.publish(
                    replayed_message(letter), mandatory=True,
                    routing_key=route.entity.name if route else "unknown",
                    timeout=settings.amqp.publish_timeout_s)
                # Only now, the republish confirmed, may the dead letter go.
                await letter.message.ack()
                outcome.done.append(letter)
            except Exception as e:
                outcome.failed[letter.id] = f"{type(e).__name__}: {e}"
            if progress and (n % PROGRESS_EVERY == 0 or n == len(chosen)) and len(chosen) > 1:
                progress(f"replayed {len(outcome.done)}/{len(chosen)}"
                         + (f", {len(outcome.failed)} failed" if outcome.failed else ""))
        return outcome


async def purge(settings: Settings, *, all_: bool = False, ids: Iterable[str] = (),
                progress: Progress | None = None) -> Outcome:
    """Delete the chosen dead letters; the others stay, in order."""
    async with holding(settings, progress) as held:
        chosen, missing = held.select(all_=all_, ids=ids)
        outcome = Outcome(missing=missing)
        for letter in chosen:
            await letter.message.ack()
            outcome.done.append(letter)
        if progress and len(chosen) >= PROGRESS_EVERY:
            progress(f"purged {len(chosen)}")
        return outcome


def replayed_message(letter: DeadLetter) -> aio_pika.Message:
    """The batch as its producer published it: body, properties, its own headers and the
    signed identity the worker attached, never a ``user_id`` (the broker accepts only the
    publishing connection's own), nor an identity signed here."""
    message = letter.message
    headers = {k: v for k, v in (message.headers or {}).items()
               if k not in _DROPPED_HEADERS and not k.startswith(_DROPPED_PREFIXES)}
    return aio_pika.Message(
        body=message.body, headers=headers, content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT, priority=message.priority,
        correlation_id=message.correlation_id, reply_to=message.reply_to,
        message_id=message.message_id, timestamp=message.timestamp, type=message.type,
        app_id=message.app_id)


def group_by_status(letters: Iterable[DeadLetter]) -> dict[str, int]:
    """Dead letters counted by error status ("none" where the header is missing)."""
    counts: dict[str, int] = {}
    for letter in letters:
        key = str(letter.error_status) if letter.error_status is not None else "none"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def _dead_letters(messages: list[AbstractIncomingMessage], settings: Settings
                  ) -> list[DeadLetter]:
    registry = default_registry()
    seen: dict[str, int] = {}
    letters = []
    for position, message in enumerate(messages, 1):
        headers = {k: _plain(v) for k, v in (message.headers or {}).items()}
        path = _text(headers.get(PATH_HEADER))
        route = registry.route(path) if path else None
        base = (_text(headers.get(ID_HEADER)) or message.message_id
                or hashlib.sha256(message.body).hexdigest()[:16])
        # Ids must pick one dead letter; a copy (e.g. published twice by hand) gets a suffix.
        seen[base] = seen.get(base, 0) + 1
        letter_id = base if seen[base] == 1 else f"{base}~{seen[base]}"
        letters.append(DeadLetter(
            id=letter_id, position=position, database=_text(headers.get(DATABASE_HEADER)),
            path=path, entity=route.entity.name if route else None,
            item_count=_item_count(message, settings),
            error_status=_int(headers.get("x-upsert-error-status")),
            error_title=_text(headers.get("x-upsert-error-title")),
            error_detail=_text(headers.get("x-upsert-error-detail")),
            attempts=_int(headers.get("x-upsert-attempts")),
            dead_lettered_at=_text(headers.get("x-upsert-dead-lettered-at")),
            user_id=_text(headers.get(USER_HEADER)),
            properties=_properties(message), headers=headers, body=message.body,
            message=message))
    return letters


def _properties(message: AbstractIncomingMessage) -> dict[str, Any]:
    values = {
        "message_id": message.message_id, "correlation_id": message.correlation_id,
        "reply_to": message.reply_to,
        "timestamp": message.timestamp.isoformat() if message.timestamp else None,
        "content_type": message.content_type, "content_encoding": message.content_encoding,
        "type": message.type, "app_id": message.app_id, "priority": message.priority,
        "body_bytes": len(message.body),
    }
    return {k: v for k, v in values.items() if v is not None}


def _decoded_body(letter_body: bytes, encoding: str | None, settings: Settings) -> bytes | None:
    try:
        return decode_body(letter_body, encoding, settings)
    except Exception:
        return None


def _item_count(message: AbstractIncomingMessage, settings: Settings) -> int | None:
    raw = _decoded_body(message.body, message.content_encoding, settings)
    try:
        items = orjson.loads(raw) if raw is not None else None
    except orjson.JSONDecodeError:
        return None
    return len(items) if isinstance(items, list) else None


def _readable_body(letter: DeadLetter, settings: Settings) -> Any:
    raw = _decoded_body(letter.body, letter.message.content_encoding, settings)
    if raw is None:
        return {"undecodable_bytes": len(letter.body)}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")


def _plain(value: Any) -> Any:
    """Header values as JSON-friendly Python values."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(value) if isinstance(value, str) else None
    except ValueError:
        return None
