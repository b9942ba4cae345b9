"""One delivery from the request queue, read once: the request, its counters and the ids
every step of its handling logs and answers with.

It reads aiormq's delivered message as it comes off the channel, not aio-pika's
``IncomingMessage``: building that object (and the task aio-pika adds around each
delivery) cost about a twentieth of a small batch's CPU (issue 21, BENCHMARKS.md).  The
rare paths that want aio-pika's message (a copy to a retry queue or to ``vbapi.dead``)
build one from it then (:meth:`Delivery.incoming`)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

import aio_pika
from aiormq.abc import DeliveredMessage

from worker.amqp import identity
from worker.core.replies import new_activity_id
from worker.core.request import Request
from worker.core.wire import (
    ATTEMPTS_HEADER,
    DELIVERY_COUNT_HEADER,
    SIGNATURE_HEADER,
    aware,
    int_header,
)
from worker.logs import get_logger

log = get_logger("worker.amqp.consumer")


@dataclass(frozen=True)
class Delivery:
    message: DeliveredMessage
    request: Request
    # Trips through the retry queues so far (0 on the first attempt).
    attempts: int
    # Deliveries of this copy from the request queue, this one included.
    deliveries: int
    # When the worker first received the batch (kept across retries).
    received_at: dt.datetime
    activity_id: str
    started: float
    # The ids every line logged while the delivery is handled carries: bound once, with
    # structlog's contextvars, by the consumer (Consumer.handle).
    context: dict[str, Any]

    @classmethod
    def of(cls, message: DeliveredMessage, signing_key: bytes) -> Delivery:
        properties = message.header.properties
        headers = dict(properties.headers or {})
        attempts = int_header(headers, ATTEMPTS_HEADER)
        delivery_count = int_header(headers, DELIVERY_COUNT_HEADER)
        request = _request(message, headers,
                           first_delivery=not message.redelivered and attempts == 0
                           and delivery_count == 0)
        vouched = _vouched(request, signing_key)
        if vouched is not None and request.user_id is None and vouched.user_id:
            # A batch the worker (or `dlq replay`) republished carries its producer's name
            # in a signed header instead of user_id.
            request = dataclasses.replace(request, user_id=vouched.user_id)
        activity_id = new_activity_id()
        return cls(
            message=message, request=request, attempts=attempts,
            deliveries=delivery_count + 1,
            # Kept across retries, dead letters and replay, where the worker vouched for
            # it; a producer's own header is no receipt time.
            received_at=vouched.received_at if vouched else dt.datetime.now(dt.UTC),
            activity_id=activity_id, started=time.perf_counter(),
            context={"activity_id": activity_id, "message_id": properties.message_id,
                     "correlation_id": properties.correlation_id, "path": request.path,
                     "database": request.database})

    def incoming(self) -> aio_pika.IncomingMessage:
        """aio-pika's message of the delivery, for the paths that copy it on."""
        return aio_pika.IncomingMessage(self.message)

    @property
    def _tag(self) -> int:
        tag = self.message.delivery_tag
        if tag is None:  # a Basic.Deliver always has one; Basic.GetOk is never handled here
            raise ValueError("a delivery without a delivery tag")
        return tag

    async def ack(self) -> None:
        """Acknowledge, the last step of a delivery: queued to aiormq's writer, not awaited
        until written.  Should the connection drop before it goes out, the broker delivers
        the batch again and the record answers it, as when a worker dies just after."""
        await self.message.channel.basic_ack(self._tag, wait=False)

    async def reject(self, *, requeue: bool) -> None:
        await self.message.channel.basic_reject(self._tag, requeue=requeue)

    def signed_headers(self, signing_key: bytes) -> dict[str, str]:
        """The signed producer name and first receipt time for a copy the worker sends on."""
        return identity.sign(signing_key, self.request.user_id, self.received_at,
                             envelope_of(self.request))


def envelope_of(request: Request) -> identity.Envelope:
    """What the worker's signature on a republished copy of the request is bound to."""
    return identity.Envelope(path=request.path, database=request.database,
                             message_id=request.message_id, timestamp=request.timestamp,
                             body=request.body)


def _request(message: DeliveredMessage, headers: dict[str, Any], *,
             first_delivery: bool) -> Request:
    properties = message.header.properties
    return Request(
        body=message.body, headers=headers, content_type=properties.content_type,
        content_encoding=properties.content_encoding,
        # An empty id is no id: recorded, it would answer every other batch sent
        # with an empty id from the first one's record.
        message_id=properties.message_id or None,
        correlation_id=properties.correlation_id, reply_to=properties.reply_to,
        user_id=properties.user_id or None,
        timestamp=aware(properties.timestamp) if properties.timestamp else None,
        first_delivery=first_delivery)


def _vouched(request: Request, signing_key: bytes) -> identity.Vouched | None:
    if SIGNATURE_HEADER not in request.headers:
        return None  # a batch as its producer sent it: the usual case, no HMAC to compute
    try:
        return identity.verified(signing_key, request.headers, envelope_of(request))
    except Exception:  # hostile header values must not keep a message from an outcome
        return None
