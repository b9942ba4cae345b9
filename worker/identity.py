"""The producer's identity on messages the worker itself republishes.

RabbitMQ checks a message's ``user_id`` against the publishing connection's user, so the
worker cannot keep a producer's ``user_id`` property when it sends a batch to a retry queue
or to ``vbapi.dead``, nor can ``dlq replay``.  The name travels instead in the header
``x-upsert-user-id``, with an HMAC over it, the path, the database and the body, so that
the access check still holds for the original producer and no producer can forge another's
name by setting the header.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from worker.wire import SIGNATURE_HEADER, USER_HEADER


def _digest(key: bytes, user_id: str, path: str, database: str, body: bytes) -> str:
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in (user_id.encode(), path.encode(), database.encode()):
        mac.update(len(part).to_bytes(4, "big") + part)
    mac.update(body)
    return mac.hexdigest()


def sign(key: bytes, user_id: str, path: str, database: str, body: bytes) -> dict[str, str]:
    """The headers that carry ``user_id`` on a republished message."""
    return {USER_HEADER: user_id,
            SIGNATURE_HEADER: _digest(key, user_id, path, database, body)}


def verified_user(key: bytes, headers: Mapping[str, Any], path: str, database: str,
                  body: bytes) -> str | None:
    """The carried user name if its signature is valid, else None."""
    user = headers.get(USER_HEADER)
    signature = headers.get(SIGNATURE_HEADER)
    if isinstance(user, bytes):
        user = user.decode("utf-8", "replace")
    if isinstance(signature, bytes):
        signature = signature.decode("ascii", "replace")
    if not isinstance(user, str) or not isinstance(signature, str):
        return None
    expected = _digest(key, user, path, database, body)
    # As bytes: compare_digest refuses str with non-ASCII characters, which a forged
    # header may hold.
    matches = hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))
    return user if matches else None
