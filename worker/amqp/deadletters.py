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
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aio_pika
from aio_pika.abc import (
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)

from schemas.registry import default_registry
from worker.amqp.copies import republished
from worker.amqp.letters import DeadLetter, dead_letters
from worker.amqp.nodes import connect_first
from worker.amqp.topology import DEAD_QUEUE, declare_dead_queue, declare_topology
from worker.core.wire import (
    ATTEMPTS_HEADER,
    DEAD_ACTIVITY_HEADER,
    DEAD_LETTERED_AT_HEADER,
    DEATH_HEADER,
    DEATH_HEADER_PREFIXES,
    DELIVERY_COUNT_HEADER,
    ERROR_DETAIL_HEADER,
    ERROR_STATUS_HEADER,
    ERROR_TITLE_HEADER,
)
from worker.settings import AmqpSettings, LimitsSettings, RetrySettings

if TYPE_CHECKING:
    from worker.amqp.preview import Preview

# What the worker added when it dead-lettered the batch, and what the broker added on the
# way: a replayed batch starts afresh without them.  The signed headers stay: the
# producer's name, and the time the worker first received the batch, by which the
# replay's writes are ordered (never over newer data).
DROPPED_HEADERS = frozenset({
    ERROR_STATUS_HEADER, ERROR_TITLE_HEADER, ERROR_DETAIL_HEADER, ATTEMPTS_HEADER,
    DEAD_LETTERED_AT_HEADER, DEAD_ACTIVITY_HEADER, DELIVERY_COUNT_HEADER, DEATH_HEADER,
})
# A holding read stops when the queue's count is reached, or when nothing came for this
# long (another command may hold some of them).
IDLE_STOP_S = 2.0
PROGRESS_EVERY = 500
# How long ``preview`` waits for the dry runs' replies by default, after its last publish.
PREVIEW_TIMEOUT_S = 30.0

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command acts on: all of them, those with these ids, or those
    that failed with this status."""

    all_: bool = False
    ids: Sequence[str] = ()
    status: int | None = None


@dataclass
class CommandResult:
    """What ``replay`` or ``purge`` did: ids done, ids not found, failures by id."""

    done: list[DeadLetter] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


class Holding:
    """Every dead letter currently in the queue, held unacknowledged on one channel."""

    def __init__(self, letters: list[DeadLetter], connection: AbstractConnection) -> None:
        self.letters = letters
        self.connection = connection

    def select(self, selection: Selection) -> tuple[list[DeadLetter], list[str]]:
        """The chosen dead letters in queue order, and the requested ids not found."""
        if selection.all_:
            return list(self.letters), []
        if selection.status is not None:
            return [d for d in self.letters if d.error_status == selection.status], []
        wanted = list(dict.fromkeys(selection.ids))
        chosen = set(wanted)
        found = [d for d in self.letters if d.id in chosen]
        known = {d.id for d in found}
        return found, [i for i in wanted if i not in known]


@dataclass(frozen=True)
class DeadLetterQueue:
    """``vbapi.dead`` as the commands reach it: over ``amqp``, its bodies decoded within
    ``limits`` (item counts, ``dlq show``), and a replay declaring the topology of the
    ``retry`` delays.  ``progress`` hears how a long command goes."""

    amqp: AmqpSettings
    limits: LimitsSettings
    retry: RetrySettings
    progress: Progress | None = None

    @contextlib.asynccontextmanager
    async def holding(self) -> AsyncIterator[Holding]:
        """Hold every dead letter for the block; those not acknowledged go back, in order."""
        # A plain connection: were it lost, the held dead letters go back to the queue, and
        # the command must fail rather than reconnect and carry on with stale deliveries.
        connection = await connect_first(self.amqp.urls, timeout_s=self.amqp.connect_timeout_s,
                                         connection_name="upsert-worker dlq")
        async with connection:
            channel = await connection.channel()
            # As the worker declares it: a classic queue, whatever the vhost's default type.
            queue = await declare_dead_queue(channel)
            if queue is None:
                raise RuntimeError(f"queue {DEAD_QUEUE} unavailable (its node down?)")
            # No prefetch limit: the broker sends the whole queue at once, in queue order.
            # (Set after the declaration, which may have reopened the channel.)
            await channel.set_qos(prefetch_count=0)
            received = await _receive_all(queue, self.progress)
            try:
                yield Holding(dead_letters(received, self.limits), connection)
            finally:
                # Closing the channel requeues everything still unacknowledged, in place.
                with contextlib.suppress(Exception):
                    await channel.close()

    async def letters(self) -> list[DeadLetter]:
        """Every dead letter in queue order; the queue is left exactly as it was."""
        async with self.holding() as held:
            return held.letters

    async def replay(self, selection: Selection, *, dry_run: bool = False) -> CommandResult:
        """Republish the chosen dead letters to ``vbapi`` as their producers sent them, and
        remove each from the queue once the broker confirmed its republish."""
        async with self.holding() as held:
            chosen, missing = held.select(selection)
            outcome = CommandResult(missing=missing)
            if dry_run:
                outcome.done = chosen
                return outcome
            channel = await held.connection.channel(publisher_confirms=True,
                                                    on_return_raises=True)
            # The request queue must exist and be bound, or the republish would be dropped
            # as unroutable; `mandatory` below makes that an error rather than a loss.
            topology = await declare_topology(channel, self.retry.delays_s)
            for n, letter in enumerate(chosen, 1):
                await self._replay_one(letter, topology.request_exchange, outcome)
                if self.progress and (n % PROGRESS_EVERY == 0 or n == len(chosen)) \
                        and len(chosen) > 1:
                    self.progress(f"replayed {len(outcome.done)}/{len(chosen)}" + (
                        f", {len(outcome.failed)} failed" if outcome.failed else ""))
            return outcome

    async def _replay_one(self, letter: DeadLetter, exchange: AbstractExchange,
                          outcome: CommandResult) -> None:
        route = default_registry().route(letter.path) if letter.path else None
        try:
            await exchange.publish(replayed_message(letter), mandatory=True,
                                   routing_key=route.entity.name if route else "unknown",
                                   timeout=self.amqp.publish_timeout_s)
            # Only now, the republish confirmed, may the dead letter go.
            await letter.message.ack()
            outcome.done.append(letter)
        except Exception as e:
            outcome.failed[letter.id] = f"{type(e).__name__}: {e}"

    async def preview(self, selection: Selection,
                      timeout_s: float = PREVIEW_TIMEOUT_S) -> list[Preview]:
        """What each chosen dead letter would be answered now: a dry-run copy of each is
        published (``x-upsert-dry-run``, replies to an exclusive queue of this call's) and
        its reply awaited, ``timeout_s`` at most after the last publish.  In queue order;
        an id of the selection that is not in the queue is left out.  Nothing is removed
        from the queue, written or recorded (worker/amqp/preview.py)."""
        from worker.amqp.preview import preview_letters

        async with self.holding() as held:
            chosen, _ = held.select(selection)
            if not chosen:
                return []
            return await preview_letters(held.connection, chosen, self.retry.delays_s,
                                         timeout_s, self.amqp.publish_timeout_s)

    async def purge(self, selection: Selection) -> CommandResult:
        """Delete the chosen dead letters; the others stay, in order."""
        async with self.holding() as held:
            chosen, missing = held.select(selection)
            outcome = CommandResult(missing=missing)
            for letter in chosen:
                await letter.message.ack()
                outcome.done.append(letter)
            if self.progress and len(chosen) >= PROGRESS_EVERY:
                self.progress(f"purged {len(chosen)}")
            return outcome


async def _receive_all(queue: AbstractQueue, progress: Progress | None
                       ) -> list[AbstractIncomingMessage]:
    """Every message of the queue, consumed unacknowledged, in queue order."""
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
    return received


def replayed_message(letter: DeadLetter) -> aio_pika.Message:
    """The batch as its producer published it: body, properties, its own headers and the
    signed identity the worker attached, never a ``user_id`` (the broker accepts only the
    publishing connection's own), nor an identity signed here."""
    message = letter.message
    headers = {k: v for k, v in (message.headers or {}).items()
               if k not in DROPPED_HEADERS and not k.startswith(DEATH_HEADER_PREFIXES)}
    return republished(message, headers)
