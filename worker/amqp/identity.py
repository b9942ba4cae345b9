"""What the worker vouches for on the messages it republishes itself: the producer's name
and the time the worker first received the batch.

RabbitMQ checks a message's ``user_id`` against the publishing connection's user, so the
worker cannot keep a producer's ``user_id`` property when it sends a batch to a retry queue
or to ``vbapi.dead``, nor can ``dlq replay``.  The name travels instead in the header
``x-upsert-user-id``, and the first receipt time (which orders the writes of a batch sent
without a timestamp, through retries, dead letters and replay) in ``x-upsert-received-at``.
An HMAC covers both, with the path, the database, the message_id, the timestamp and the
body, so that no producer can forge either by setting the headers, nor lift a signed pair
onto another batch: unsigned or forged, they are ignored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from worker.core.wire import RECEIVED_AT_HEADER, SIGNATURE_HEADER, USER_HEADER, time_header


@dataclass(frozen=True)
class Envelope:
    """What the signature binds the vouched-for values to: the batch as its producer sent
    it, less what the worker may not change anyway (the body is the last part)."""

    path: str | None
    database: str | None
    message_id: str | None
    timestamp: dt.datetime | None
    body: bytes


@dataclass(frozen=True)
class Vouched:
    """What a valid signature vouches for."""

    user_id: str | None
    received_at: dt.datetime


def _digest(key: bytes, user_id: str | None, received_at: str, envelope: Envelope) -> str:
    stamp = "" if envelope.timestamp is None else str(int(envelope.timestamp.timestamp()))
    parts = ("" if user_id is None else "u" + user_id, received_at, envelope.path or "",
             envelope.database or "", envelope.message_id or "", stamp)
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        encoded = part.encode("utf-8", "surrogatepass")
        mac.update(len(encoded).to_bytes(4, "big") + encoded)
    mac.update(envelope.body)
    return mac.hexdigest()


def sign(key: bytes, user_id: str | None, received_at: dt.datetime,
         envelope: Envelope) -> dict[str, str]:
    """The headers that carry the producer's name (if any) and the first receipt time."""
    received = received_at.isoformat()
    headers = {RECEIVED_AT_HEADER: received,
               SIGNATURE_HEADER: _digest(key, user_id, received, envelope)}
    if user_id is not None:
        headers[USER_HEADER] = user_id
    return headers


def verified(key: bytes, headers: Mapping[str, Any], envelope: Envelope) -> Vouched | None:
    """The carried name and receipt time if the signature is valid, else None."""
    user = _text(headers.get(USER_HEADER))
    received = _text(headers.get(RECEIVED_AT_HEADER))
    signature = _text(headers.get(SIGNATURE_HEADER))
    received_at = time_header(headers, RECEIVED_AT_HEADER)
    if signature is None or received is None or received_at is None:
        return None
    expected = _digest(key, user, received, envelope)
    # As bytes: compare_digest refuses str with non-ASCII characters, which a forged
    # header may hold.
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        return None
    return Vouched(user, received_at)


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None
