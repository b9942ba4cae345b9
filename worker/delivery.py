"""One delivery from the request queue, read once: the request, its counters and the ids
every step of its handling logs and answers with."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from worker import identity
from worker.logs import get_logger
from worker.replies import new_activity_id
from worker.request import Request
from worker.wire import (
    ATTEMPTS_HEADER,
    DELIVERY_COUNT_HEADER,
    RECEIVED_AT_HEADER,
    aware,
    int_header,
    time_header,
)

log = get_logger("worker.consumer")


@dataclass(frozen=True)
class Delivery:
    message: AbstractIncomingMessage
    request: Request
    # Trips through the retry queues so far (0 on the first attempt).
    attempts: int
    # Deliveries of this copy from the request queue, this one included.
    deliveries: int
    # When the worker first received the batch (kept across retries).
    received_at: dt.datetime
    activity_id: str
    started: float
    # The logger, bound to the delivery's ids.
    log: Any

    @classmethod
    def of(cls, message: AbstractIncomingMessage, signing_key: bytes) -> Delivery:
        headers = dict(message.headers or {})
        attempts = int_header(headers, ATTEMPTS_HEADER)
        delivery_count = int_header(headers, DELIVERY_COUNT_HEADER)
        request = _request(message, headers, signing_key,
                           first_delivery=not message.redelivered and attempts == 0
                           and delivery_count == 0)
        activity_id = new_activity_id()
        return cls(
            message=message, request=request, attempts=attempts,
            deliveries=delivery_count + 1,
            received_at=time_header(headers, RECEIVED_AT_HEADER) or dt.datetime.now(dt.UTC),
            activity_id=activity_id, started=time.perf_counter(),
            log=log.bind(activity_id=activity_id, message_id=message.message_id,
                         correlation_id=message.correlation_id, path=request.path,
                         database=request.database))


def _request(message: AbstractIncomingMessage, headers: dict[str, Any], signing_key: bytes,
             *, first_delivery: bool) -> Request:
    request = Request(
        body=message.body, headers=headers, content_type=message.content_type,
        content_encoding=message.content_encoding,
        # An empty id is no id: recorded, it would answer every other batch sent
        # with an empty id from the first one's record.
        message_id=message.message_id or None,
        correlation_id=message.correlation_id, reply_to=message.reply_to,
        user_id=message.user_id,
        timestamp=aware(message.timestamp) if message.timestamp else None,
        first_delivery=first_delivery)
    if request.user_id is None and request.path and request.database:
        # A batch the worker (or `dlq replay`) republished carries its producer's name
        # in a signed header instead; an unsigned or forged one is ignored.
        try:
            carried = identity.verified_user(signing_key, headers, request.path,
                                             request.database, message.body)
        except Exception:  # hostile header values must not keep a message from an outcome
            carried = None
        if carried is not None:
            request = dataclasses.replace(request, user_id=carried)
    return request
