"""Names on the wire, in one place: the headers producers, the worker, the broker and the
operations commands write and read, and the helpers that read them back safely.

Whoever writes or reads a header imports its name from here, so a renamed header cannot
be written under one name and read under another.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from vbapi_upsert_client import wire as client_wire

# The names a producer writes and reads are the client library's, so that the two sides of
# the wire cannot name one thing two ways: the content type, the message_id limit (AMQP's
# short string, which is also what the processed-message record keeps), a request's path
# and database headers, the dry-run header (the one x-upsert-* header a producer sets),
# and a reply's status header.
JSON_CONTENT_TYPE = client_wire.JSON_CONTENT_TYPE
MAX_MESSAGE_ID_BYTES = client_wire.MAX_MESSAGE_ID_BYTES
PATH_HEADER = client_wire.PATH_HEADER
DATABASE_HEADER = client_wire.DATABASE_HEADER
DRY_RUN_HEADER = client_wire.DRY_RUN_HEADER
STATUS_HEADER = client_wire.STATUS_HEADER

# A reply's own header, beside the status.
ACTIVITY_HEADER = "activity-id"

# Set by the worker on a batch it sends to a retry queue (and kept on its dead letter).
ATTEMPTS_HEADER = "x-upsert-attempts"
RECEIVED_AT_HEADER = "x-upsert-received-at"
# The producer's name on a republished batch, and its signature (worker/amqp/identity.py).
USER_HEADER = "x-upsert-user-id"
SIGNATURE_HEADER = "x-upsert-user-sig"
# Set by the worker on a dead letter: why it is there.
ERROR_STATUS_HEADER = "x-upsert-error-status"
ERROR_TITLE_HEADER = "x-upsert-error-title"
ERROR_DETAIL_HEADER = "x-upsert-error-detail"
DEAD_ACTIVITY_HEADER = "x-upsert-activity-id"
DEAD_LETTERED_AT_HEADER = "x-upsert-dead-lettered-at"

# Added by the broker on delivery (quorum queues) and on dead-lettering.
DELIVERY_COUNT_HEADER = "x-delivery-count"
DEATH_HEADER = "x-death"
DEATH_HEADER_PREFIXES = ("x-first-death-", "x-last-death-")
# Why the broker itself dead-lettered a message (e.g. ``delivery_limit``): read for display
# only, never counted (RabbitMQ 3.13 and later no longer count republished copies in x-death).
FIRST_DEATH_REASON_HEADER = "x-first-death-reason"


def header_text(headers: Mapping[str, Any], name: str) -> str | None:
    """A header as text (AMQP long strings may arrive as bytes), or None if absent/empty."""
    value = headers.get(name)
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if value is None:
        return None
    value = str(value)
    return value or None


def flag_header(headers: Mapping[str, Any], name: str) -> bool:
    """A yes/no header: absent, false, 0, "false", "0", "no" or "" is no; any other value
    is yes (a producer who asked for a dry run in some other spelling never gets a write)."""
    if name not in headers:
        return False
    value = headers[name]
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "0", "no")
    return value is not None and value is not False and value != 0


def int_header(headers: Mapping[str, Any], name: str) -> int:
    """A counter header; anything a producer could put there that is no count is 0."""
    value = headers.get(name)
    try:
        return max(0, int(value)) if value is not None else 0
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(float("inf"))
        return 0


def time_header(headers: Mapping[str, Any], name: str) -> dt.datetime | None:
    """A timestamp header the worker wrote (ISO 8601); None if absent or unreadable."""
    value = headers.get(name)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    try:
        return aware(dt.datetime.fromisoformat(value))
    except (ValueError, OverflowError):
        return None


def aware(value: dt.datetime) -> dt.datetime:
    """A timestamp without an offset is UTC, as AMQP timestamps are."""
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
