"""The only module that touches aio-pika messages: it decides ack, retry or dead-letter.

For every delivery, in this order, each step confirmed by the broker before the next:
publish the reply (or the copy to a retry queue), publish the dead letter if the outcome
is one, and only then acknowledge.  If the worker dies anywhere before the ack, the broker
redelivers the request, and the recorded reply (by message_id) makes that harmless.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Mapping
from typing import Any

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage

from worker import errors, identity
from worker import metrics as m
from worker.batch import Request
from worker.logs import get_logger
from worker.processor import Outcome, Processor
from worker.replies import new_activity_id
from worker.settings import Settings
from worker.topology import DEAD_QUEUE, retry_queue_name

log = get_logger("worker.consumer")

ATTEMPTS_HEADER = "x-upsert-attempts"
RECEIVED_AT_HEADER = "x-upsert-received-at"
# Headers the broker adds on delivery; a republished copy must not carry them along.
_BROKER_HEADERS = ("x-delivery-count",)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Consumer:
    """Handles deliveries from the request queue."""

    def __init__(self, settings: Settings, processor: Processor,
                 default_exchange: AbstractExchange, reply_exchange: AbstractExchange) -> None:
        self.settings = settings
        self.processor = processor
        self.default_exchange = default_exchange
        self.reply_exchange = reply_exchange
        self._signing_key = settings.amqp.signing_key_bytes()
        self.in_flight: set[asyncio.Task[Any]] = set()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.in_flight.add(task)
        m.IN_FLIGHT.inc()
        started = time.perf_counter()
        if message.timestamp is not None:
            waited = _utcnow() - _aware(message.timestamp)
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
            self.in_flight.discard(task)

    async def handle(self, message: AbstractIncomingMessage) -> None:
        activity_id = new_activity_id()
        started = time.perf_counter()
        headers = dict(message.headers or {})
        attempts = _int_header(headers, ATTEMPTS_HEADER)
        deliveries = _int_header(headers, "x-delivery-count") + 1
        received_at = _time_header(headers, RECEIVED_AT_HEADER) or _utcnow()
        request = self.request_of(message, headers)
        bound = log.bind(activity_id=activity_id, message_id=message.message_id,
                         correlation_id=message.correlation_id, path=request.path,
                         database=request.database)
        try:
            try:
                if deliveries > self.settings.retry.max_deliveries:
                    outcome = await self.poison_outcome(request, deliveries, activity_id)
                else:
                    outcome = await self.processor.process(request, received_at, activity_id)
            except errors.TransientFailure as e:
                bound.warning("batch failed transiently", error=str(e), attempts=attempts)
                given_up = await self.retry_or_give_up(
                    message, request, headers, attempts, received_at, activity_id, 503,
                    e.title, str(e))
                if given_up is not None:
                    _log_summary(bound, given_up, started, attempts)
                return
            except Exception as e:  # a bug: bounded retries, then a dead letter
                bound.error("batch failed unexpectedly", error=repr(e))
                bound.debug("traceback", exc_info=True)
                given_up = await self.retry_or_give_up(
                    message, request, headers, attempts, received_at, activity_id, 500,
                    "Internal Server Error", f"unexpected failure: {type(e).__name__}")
                if given_up is not None:
                    _log_summary(bound, given_up, started, attempts)
                return
            await self.finish(message, request, headers, outcome, activity_id, attempts)
            _record(outcome)
            _log_summary(bound, outcome, started, attempts)
        except Exception as e:
            # The reply, retry copy or dead letter could not be confirmed: hand the request
            # back to the broker rather than acknowledge something half done.
            bound.error("could not complete delivery; handing it back", error=repr(e))
            await _hand_back(message)

    async def poison_outcome(self, request: Request, deliveries: int,
                             activity_id: str) -> Outcome:
        """The answer to a delivery past the poison limit: its recorded reply if its writes
        committed before the workers that held it died (it is then no poison at all, and
        must be answered as the first time), else a 500 refusal and a dead letter."""
        recorded = await self.processor.recorded(request)
        if recorded is not None:
            return recorded
        return self.processor.refusal(
            500, "Poison message", f"delivered {deliveries} times without reaching an outcome",
            request, activity_id)

    def request_of(self, message: AbstractIncomingMessage,
                   headers: Mapping[str, Any]) -> Request:
        request = Request(
            body=message.body, headers=headers, content_type=message.content_type,
            content_encoding=message.content_encoding,
            # An empty id is no id: recorded, it would answer every other batch sent
            # with an empty id from the first one's record.
            message_id=message.message_id or None,
            correlation_id=message.correlation_id, reply_to=message.reply_to,
            user_id=message.user_id,
            timestamp=_aware(message.timestamp) if message.timestamp else None,
            first_delivery=not message.redelivered
            and _int_header(headers, ATTEMPTS_HEADER) == 0
            and _int_header(headers, "x-delivery-count") == 0)
        if request.user_id is None and request.path and request.database:
            # A batch the worker (or `dlq replay`) republished carries its producer's name
            # in a signed header instead; an unsigned or forged one is ignored.
            try:
                carried = identity.verified_user(self._signing_key, headers, request.path,
                                                 request.database, message.body)
            except Exception:  # hostile header values must not keep a message from an outcome
                carried = None
            if carried is not None:
                request = Request(**{**request.__dict__, "user_id": carried})
        return request

    async def finish(self, message: AbstractIncomingMessage, request: Request,
                     headers: dict[str, Any], outcome: Outcome, activity_id: str,
                     attempts: int) -> None:
        await self.publish_reply(request, outcome, activity_id)
        if outcome.dead_letter:
            await self.publish_dead_letter(message, request, headers, outcome, activity_id,
                                           attempts)
        await message.ack()

    async def retry_or_give_up(self, message: AbstractIncomingMessage, request: Request,
                               headers: dict[str, Any], attempts: int,
                               received_at: dt.datetime, activity_id: str, status: int,
                               title: str, detail: str) -> Outcome | None:
        """Send the batch to its next retry queue (None), or answer and dead-letter it."""
        delays = self.settings.retry.delays_s
        if attempts < len(delays):
            copy_headers = self._republished_headers(request, headers)
            copy_headers[ATTEMPTS_HEADER] = attempts + 1
            copy_headers[RECEIVED_AT_HEADER] = received_at.isoformat()
            await self.default_exchange.publish(
                _copy(message, copy_headers), routing_key=retry_queue_name(delays[attempts]),
                timeout=self.settings.amqp.publish_timeout_s)
            await message.ack()
            m.RETRIES.labels(reason=str(status)).inc()
            return None
        detail = f"{detail} (after {attempts + 1} attempts)"
        outcome = self.processor.refusal(status, title, detail, request, activity_id)
        await self.finish(message, request, headers, outcome, activity_id, attempts)
        _record(outcome)
        return outcome

    async def publish_reply(self, request: Request, outcome: Outcome, activity_id: str) -> None:
        reply = aio_pika.Message(
            body=outcome.body, content_type="application/json",
            correlation_id=request.correlation_id or request.message_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers={"status": outcome.status, "path": outcome.path or "",
                     "vbasoftware-database": outcome.database or "",
                     "activity-id": outcome.activity_id or activity_id})
        timeout = self.settings.amqp.publish_timeout_s
        if request.reply_to:
            await self.default_exchange.publish(reply, routing_key=request.reply_to,
                                                mandatory=False, timeout=timeout)
        else:
            await self.reply_exchange.publish(reply, routing_key=outcome.entity or "unknown",
                                              mandatory=False, timeout=timeout)

    async def publish_dead_letter(self, message: AbstractIncomingMessage, request: Request,
                                  headers: dict[str, Any], outcome: Outcome, activity_id: str,
                                  attempts: int) -> None:
        dead_headers = self._republished_headers(request, headers)
        dead_headers.update({
            "x-upsert-error-status": outcome.status,
            "x-upsert-error-title": outcome.title or "",
            "x-upsert-error-detail": outcome.detail or "",
            "x-upsert-activity-id": activity_id,
            "x-upsert-attempts": attempts + 1,
            "x-upsert-dead-lettered-at": _utcnow().isoformat(),
        })
        await self.default_exchange.publish(
            _copy(message, dead_headers), routing_key=DEAD_QUEUE,
            timeout=self.settings.amqp.publish_timeout_s)
        m.DEAD_LETTERS.labels(status=str(outcome.status)).inc()

    def _republished_headers(self, request: Request, headers: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in headers.items() if k not in _BROKER_HEADERS}
        if request.user_id and request.path and request.database:
            out.update(identity.sign(self._signing_key, request.user_id, request.path,
                                     request.database, request.body))
        return out


def _copy(message: AbstractIncomingMessage, headers: dict[str, Any]) -> aio_pika.Message:
    """The message with its body and properties, new headers, and no user_id (the broker
    accepts only the publishing connection's own) nor expiration (it must not vanish)."""
    return aio_pika.Message(
        body=message.body, headers=headers, content_type=message.content_type,
        content_encoding=message.content_encoding, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=message.priority, correlation_id=message.correlation_id,
        reply_to=message.reply_to, message_id=message.message_id,
        timestamp=message.timestamp, type=message.type, app_id=message.app_id)


async def _hand_back(message: AbstractIncomingMessage) -> None:
    try:
        await message.nack(requeue=True)
    except Exception:  # the channel is gone; the broker requeues by itself
        pass


def _log_summary(bound: Any, outcome: Outcome, started: float, attempts: int) -> None:
    """The one line per batch outcome: ids (bound), counts by item status, duration of
    this delivery from receipt to acknowledgement.  Never item payloads."""
    bound.info("batch answered", status=outcome.status, entity=outcome.entity,
               items=outcome.item_count,
               statuses={str(k): v for k, v in outcome.items.items()},
               replayed=outcome.replayed, dead_lettered=outcome.dead_letter,
               attempts=attempts + 1,
               duration_ms=round((time.perf_counter() - started) * 1000, 1))


def _record(outcome: Outcome) -> None:
    entity, database = outcome.entity or "unknown", outcome.database or "unknown"
    result = "dead_lettered" if outcome.dead_letter else (
        "replayed" if outcome.replayed else "answered")
    m.BATCHES.labels(entity=entity, database=database, outcome=result).inc()
    if outcome.replayed:
        m.REDELIVERIES_ANSWERED.inc()
    for status, count in outcome.items.items():
        m.ITEMS.labels(entity=entity, database=database, status=str(status)).inc(count)
    if outcome.item_count:
        m.BATCH_SIZE.observe(outcome.item_count)


def _int_header(headers: Mapping[str, Any], name: str) -> int:
    """A counter header; anything a producer could put there that is no count is 0."""
    value = headers.get(name)
    try:
        return max(0, int(value)) if value is not None else 0
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(float("inf"))
        return 0


def _time_header(headers: Mapping[str, Any], name: str) -> dt.datetime | None:
    value = headers.get(name)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    try:
        return _aware(dt.datetime.fromisoformat(value))
    except (ValueError, OverflowError):
        return None


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
