"""Handles deliveries from the request queue: it decides ack, retry or dead-letter.

For every delivery, in this order, each step confirmed by the broker before the next:
publish the reply (or the copy to a retry queue), publish the dead letter if the answer
is one, and only then acknowledge.  If the worker dies anywhere before the ack, the broker
redelivers the request, and the recorded reply (by message_id) makes that harmless.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage

from worker import metrics as m
from worker.amqp.copies import republished
from worker.amqp.delivery import Delivery, log
from worker.amqp.topology import DEAD_QUEUE, retry_queue_name
from worker.core import errors
from worker.core.wire import (
    ACTIVITY_HEADER,
    ATTEMPTS_HEADER,
    DATABASE_HEADER,
    DEAD_ACTIVITY_HEADER,
    DEAD_LETTERED_AT_HEADER,
    DELIVERY_COUNT_HEADER,
    ERROR_DETAIL_HEADER,
    ERROR_STATUS_HEADER,
    ERROR_TITLE_HEADER,
    JSON_CONTENT_TYPE,
    PATH_HEADER,
    RECEIVED_AT_HEADER,
    SIGNATURE_HEADER,
    STATUS_HEADER,
    USER_HEADER,
    aware,
)
from worker.processor import Answer, Processor
from worker.settings import AmqpSettings, RetrySettings

# How long a delivery whose outcome could not be published waits before it is handed back.
HAND_BACK_PAUSE_S = 0.5
# Headers the broker adds on delivery; a republished copy must not carry them along.
_BROKER_HEADERS = (DELIVERY_COUNT_HEADER,)
# Headers the worker signs anew on every copy: a stale or forged one must not stay.
_SIGNED_HEADERS = (USER_HEADER, RECEIVED_AT_HEADER, SIGNATURE_HEADER)


@dataclass(frozen=True)
class Outlets:
    """Where the consumer publishes: the default exchange (a reply_to queue, the retry
    queues, vbapi.dead) and vbapi.replies (the replies of requests without reply_to)."""

    default_exchange: AbstractExchange
    reply_exchange: AbstractExchange


class Consumer:
    """Handles deliveries from the request queue: ``processor`` answers them, the answers
    go to ``outlets``; ``amqp`` gives the publish timeout and the signing key, ``retry`` the
    retry delays and the poison limit, ``databases`` the configured databases' names (the
    only database labels of the metrics)."""

    def __init__(self, processor: Processor, outlets: Outlets, amqp: AmqpSettings,
                 retry: RetrySettings, databases: Container[str]) -> None:
        self.processor = processor
        self.default_exchange = outlets.default_exchange
        self.reply_exchange = outlets.reply_exchange
        self.retry = retry
        self.databases = databases
        self._publish_timeout_s = amqp.publish_timeout_s
        self._signing_key = amqp.signing_key_bytes()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        m.IN_FLIGHT.inc()
        started = time.perf_counter()
        if message.timestamp is not None:
            waited = dt.datetime.now(dt.UTC) - aware(message.timestamp)
            m.BATCH_WAIT.set(max(0.0, waited.total_seconds()))
        try:
            await self.handle(message)
        except asyncio.CancelledError:
            # The channel closed under the delivery (broker drop, shutdown past grace):
            # nothing was acknowledged, so the broker delivers it again.
            log.warning("delivery cut off before its outcome; the broker redelivers it",
                        message_id=message.message_id)
            raise
        finally:
            m.IN_FLIGHT.dec()
            m.BATCH_LATENCY.observe(time.perf_counter() - started)

    async def handle(self, message: AbstractIncomingMessage) -> None:
        delivery = Delivery.of(message, self._signing_key)
        # Every line logged while the delivery is handled carries its ids, whoever logs it
        # (the processor, the store, ...).
        with structlog.contextvars.bound_contextvars(**delivery.context):
            await self._handle(delivery)

    async def _handle(self, delivery: Delivery) -> None:
        try:
            try:
                answer = await self.answer(delivery)
            except Exception as e:
                await self.retry_or_give_up(delivery, _failure(delivery, e))
                return
            await self.finish(delivery, answer)
        except Exception as e:
            # The reply, retry copy or dead letter could not be confirmed: hand the request
            # back to the broker rather than acknowledge something half done.
            log.error("could not complete delivery; handing it back", error=repr(e))
            await _hand_back(delivery.message)

    async def answer(self, delivery: Delivery) -> Answer:
        """The answer to the delivery; raises TransientFailure (or a bug) to retry it."""
        request = delivery.request
        if delivery.deliveries <= self.retry.max_deliveries:
            return await self.processor.process(request, delivery.received_at,
                                                delivery.activity_id)
        # Past the poison limit: its recorded reply if its writes committed before the
        # workers that held it died (it is then no poison at all, and must be answered as
        # the first time), else a 500 refusal and a dead letter.
        recorded = await self.processor.recorded(request)
        if recorded is not None:
            return recorded
        return self.processor.refusal(
            errors.PoisonMessage(f"delivered {delivery.deliveries} times without reaching "
                                 f"an outcome"), request, delivery.activity_id)

    async def finish(self, delivery: Delivery, answer: Answer) -> None:
        await self.publish_reply(delivery, answer)
        if answer.dead_letter and answer.error is not None:  # never a dry run's
            await self.publish_dead_letter(delivery, answer.error)
        await delivery.message.ack()
        _record(answer, self.databases)
        _log_summary(delivery, answer)

    async def retry_or_give_up(self, delivery: Delivery, error: errors.UpsertError) -> None:
        """Send the batch to its next retry queue, or answer and dead-letter it.  A dry run
        is answered at once, never retried later nor dead-lettered: whoever asked waits."""
        delays = self.retry.delays_s
        attempts = delivery.attempts
        if attempts < len(delays) and not delivery.request.dry_run:
            headers = self._republished_headers(delivery)
            headers[ATTEMPTS_HEADER] = attempts + 1
            await self.default_exchange.publish(
                republished(delivery.message, headers),
                routing_key=retry_queue_name(delays[attempts]), timeout=self._publish_timeout_s)
            await delivery.message.ack()
            m.RETRIES.labels(reason=str(error.status)).inc()
            return
        given_up = type(error)(f"{error.detail} (after {attempts + 1} attempts)")
        await self.finish(delivery, self.processor.refusal(given_up, delivery.request,
                                                           delivery.activity_id))

    async def publish_reply(self, delivery: Delivery, answer: Answer) -> None:
        request = delivery.request
        reply = aio_pika.Message(
            body=answer.body, content_type=JSON_CONTENT_TYPE,
            correlation_id=request.correlation_id or request.message_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers={STATUS_HEADER: answer.status, PATH_HEADER: answer.path or "",
                     DATABASE_HEADER: answer.database or "",
                     ACTIVITY_HEADER: answer.activity_id or delivery.activity_id})
        timeout = self._publish_timeout_s
        if request.reply_to:
            await self.default_exchange.publish(reply, routing_key=request.reply_to,
                                                mandatory=False, timeout=timeout)
        else:
            await self.reply_exchange.publish(reply, routing_key=answer.entity or "unknown",
                                              mandatory=False, timeout=timeout)

    async def publish_dead_letter(self, delivery: Delivery, error: errors.UpsertError) -> None:
        headers = self._republished_headers(delivery)
        headers.update({
            ERROR_STATUS_HEADER: error.status,
            ERROR_TITLE_HEADER: error.title,
            ERROR_DETAIL_HEADER: error.detail,
            DEAD_ACTIVITY_HEADER: delivery.activity_id,
            ATTEMPTS_HEADER: delivery.attempts + 1,
            DEAD_LETTERED_AT_HEADER: dt.datetime.now(dt.UTC).isoformat(),
        })
        await self.default_exchange.publish(
            republished(delivery.message, headers), routing_key=DEAD_QUEUE,
            timeout=self._publish_timeout_s)
        m.DEAD_LETTERS.labels(status=str(error.status)).inc()

    def _republished_headers(self, delivery: Delivery) -> dict[str, Any]:
        """The request's headers, less the broker's, plus the producer's name and the
        first receipt time, signed: they order the batch's writes wherever it goes next
        (a retry, a dead letter, a replay)."""
        out = {k: v for k, v in delivery.request.headers.items()
               if k not in _BROKER_HEADERS and k not in _SIGNED_HEADERS}
        out.update(delivery.signed_headers(self._signing_key))
        return out


def _failure(delivery: Delivery, exc: Exception) -> errors.UpsertError:
    """The error a failed attempt is retried (and at last answered) with."""
    if isinstance(exc, errors.TransientFailure):
        log.warning("batch failed transiently", error=str(exc),
                             attempts=delivery.attempts)
        return exc
    # A bug: bounded retries, then a dead letter.
    log.error("batch failed unexpectedly", error=repr(exc))
    log.debug("traceback", exc_info=True)
    return errors.InternalFailure.of(exc)


async def _hand_back(message: AbstractIncomingMessage) -> None:
    # A pause first: a hand-back is redelivered at once and counts toward the poison limit
    # (retry.max_deliveries), so a burst of failed publishes (a broker node going away, a
    # channel refusing publishes) must not use up a batch's deliveries in a second.
    await asyncio.sleep(HAND_BACK_PAUSE_S)
    try:
        # reject, not nack: from RabbitMQ 4.3 on, a quorum queue counts a rejected delivery
        # in x-delivery-count but not a nacked one, and the count must bound hand-backs too.
        await message.reject(requeue=True)
    except Exception:  # the channel is gone; the broker requeues by itself
        pass


def _log_summary(delivery: Delivery, answer: Answer) -> None:
    """The one line per batch answered: ids (bound), counts by item status, duration of
    this delivery from receipt to acknowledgement.  Never item payloads."""
    log.info(
        "batch answered", status=answer.status, entity=answer.entity,
        items=answer.item_count, statuses={str(k): v for k, v in answer.status_counts.items()},
        replayed=answer.replayed, dead_lettered=answer.dead_letter, dry_run=answer.dry_run,
        attempts=delivery.attempts + 1,
        duration_ms=round((time.perf_counter() - delivery.started) * 1000, 1))


def _record(answer: Answer, databases: Container[str]) -> None:
    # The entity is the registry's (or none); the database only a configured one.
    entity = answer.entity or "unknown"
    database = m.database_label(answer.database, databases)
    result = "dead_lettered" if answer.dead_letter else "dry_run" if answer.dry_run else (
        "replayed" if answer.replayed else "answered")
    m.BATCHES.labels(entity=entity, database=database, outcome=result).inc()
    if answer.dry_run:  # its items were written by nobody
        return
    if answer.replayed:
        m.REDELIVERIES_ANSWERED.inc()
    for status, count in answer.status_counts.items():
        m.ITEMS.labels(entity=entity, database=database,
                       status=m.item_status_label(status)).inc(count)
    if answer.item_count:
        m.BATCH_SIZE.observe(answer.item_count)
