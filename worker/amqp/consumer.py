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
from dataclasses import dataclass
from typing import Any

import aio_pika
import structlog
from aiormq import spec
from aiormq.abc import DeliveredMessage

from worker import metrics as m
from worker.amqp.answered import BatchReport
from worker.amqp.copies import republished
from worker.amqp.delivery import Delivery, log
from worker.amqp.nodes import WatchedExchange
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

    default_exchange: WatchedExchange
    reply_exchange: WatchedExchange


class Consumer:
    """Handles deliveries from the request queue: ``processor`` answers them, the answers
    go to ``outlets``; ``amqp`` gives the publish timeout and the signing key, ``retry`` the
    retry delays and the poison limit; ``report`` counts and logs each batch answered."""

    def __init__(self, processor: Processor, outlets: Outlets, amqp: AmqpSettings,
                 retry: RetrySettings, report: BatchReport) -> None:
        self.processor = processor
        self.default_exchange = outlets.default_exchange
        self.reply_exchange = outlets.reply_exchange
        self.retry = retry
        self.report = report
        self._publish_timeout_s = amqp.publish_timeout_s
        self._signing_key = amqp.signing_key_bytes()

    async def on_message(self, message: DeliveredMessage) -> None:
        """Handle one delivery from the request queue (aiormq's consumer callback)."""
        m.IN_FLIGHT.inc()
        started = time.perf_counter()
        try:
            await self.handle(message)
        except asyncio.CancelledError:
            # The channel closed under the delivery (broker drop, shutdown past grace):
            # nothing was acknowledged, so the broker delivers it again.
            log.warning("delivery cut off before its outcome; the broker redelivers it",
                        message_id=message.header.properties.message_id)
            raise
        finally:
            m.IN_FLIGHT.dec()
            m.BATCH_LATENCY.observe(time.perf_counter() - started)

    async def handle(self, message: DeliveredMessage) -> None:
        delivery = Delivery.of(message, self._signing_key)
        if delivery.request.timestamp is not None:
            waited = dt.datetime.now(dt.UTC) - delivery.request.timestamp
            m.BATCH_WAIT.set(max(0.0, waited.total_seconds()))
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
            await _hand_back(delivery)

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
        await delivery.ack()
        self.report.answered(delivery, answer)

    async def retry_or_give_up(self, delivery: Delivery, error: errors.UpsertError) -> None:
        """Send the batch to its next retry queue, or answer and dead-letter it.  A dry run
        is answered at once, never retried later nor dead-lettered: whoever asked waits."""
        delays = self.retry.delays_s
        attempts = delivery.attempts
        if attempts < len(delays) and not delivery.request.dry_run:
            headers = self._republished_headers(delivery)
            headers[ATTEMPTS_HEADER] = attempts + 1
            await self.default_exchange.publish(
                republished(delivery.incoming(), headers),
                routing_key=retry_queue_name(delays[attempts]), timeout=self._publish_timeout_s)
            await delivery.ack()
            m.RETRIES.labels(reason=str(error.status)).inc()
            return
        given_up = type(error)(f"{error.detail} (after {attempts + 1} attempts)")
        await self.finish(delivery, self.processor.refusal(given_up, delivery.request,
                                                           delivery.activity_id))

    async def publish_reply(self, delivery: Delivery, answer: Answer) -> None:
        request = delivery.request
        properties = spec.Basic.Properties(
            content_type=JSON_CONTENT_TYPE,
            correlation_id=request.correlation_id or request.message_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers={STATUS_HEADER: answer.status, PATH_HEADER: answer.path or "",
                     DATABASE_HEADER: answer.database or "",
                     ACTIVITY_HEADER: answer.activity_id or delivery.activity_id})
        timeout = self._publish_timeout_s
        if request.reply_to:
            await self.default_exchange.publish_body(answer.body, properties, request.reply_to,
                                                     timeout=timeout)
        else:
            await self.reply_exchange.publish_body(answer.body, properties,
                                                   answer.entity or "unknown", timeout=timeout)

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
            republished(delivery.incoming(), headers), routing_key=DEAD_QUEUE,
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


async def _hand_back(delivery: Delivery) -> None:
    # A pause first: a hand-back is redelivered at once and counts toward the poison limit
    # (retry.max_deliveries), so a burst of failed publishes (a broker node going away, a
    # channel refusing publishes) must not use up a batch's deliveries in a second.
    await asyncio.sleep(HAND_BACK_PAUSE_S)
    try:
        # reject, not nack: from RabbitMQ 4.3 on, a quorum queue counts a rejected delivery
        # in x-delivery-count but not a nacked one, and the count must bound hand-backs too.
        await delivery.reject(requeue=True)
    except Exception:  # the channel is gone; the broker requeues by itself
        pass

