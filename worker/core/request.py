"""A request as the worker reads it from one AMQP message, and the checks of its envelope
(media type, encoding, size) that come before any item is looked at.  Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from worker.core import errors
from worker.core.wire import (
    DATABASE_HEADER,
    DRY_RUN_HEADER,
    JSON_CONTENT_TYPE,
    PATH_HEADER,
    flag_header,
    header_text,
)
from worker.settings import LimitsSettings


@dataclass(frozen=True)
class Request:
    """What the worker reads from one AMQP message, independent of the AMQP library."""

    body: bytes
    headers: Mapping[str, Any]
    content_type: str | None = None
    content_encoding: str | None = None
    message_id: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    user_id: str | None = None
    timestamp: dt.datetime | None = None
    # Never delivered before (not redelivered, not a retry): there can be no recorded
    # reply unless a producer sent the same message_id twice, which the record's unique
    # key still catches.  Lets the writer skip its lookup.
    first_delivery: bool = False

    @property
    def path(self) -> str | None:
        return header_text(self.headers, PATH_HEADER)

    @property
    def database(self) -> str | None:
        return header_text(self.headers, DATABASE_HEADER)

    @property
    def dry_run(self) -> bool:
        """Whether the producer asked for a dry run (``x-upsert-dry-run``): answered with
        what each item would get, nothing written or recorded, never dead-lettered."""
        return flag_header(self.headers, DRY_RUN_HEADER)


def check_content_type(content_type: str | None) -> None:
    if not content_type:
        return
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != JSON_CONTENT_TYPE:
        raise errors.UnsupportedMediaType(
            f"content type '{content_type}' is not supported; use application/json")


def decode_body(body: bytes, content_encoding: str | None, limits: LimitsSettings) -> bytes:
    """The JSON bytes: size-checked, and inflated for gzip without ever exceeding the limit."""
    if len(body) > limits.max_body_bytes:
        raise errors.TooLarge(
            f"body of {len(body)} bytes is over the limit of {limits.max_body_bytes}")
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise errors.UnsupportedMediaType(
            f"content encoding '{content_encoding}' is not supported; use gzip or none")
    # Inflate at most one byte past the limit: a gzip bomb is refused, never inflated.
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limits.max_decompressed_bytes + 1)
    except zlib.error as e:
        raise errors.MalformedMessage(f"body is not valid gzip: {e}") from e
    if len(out) > limits.max_decompressed_bytes:
        raise errors.TooLarge(
            f"decompressed body is over the limit of {limits.max_decompressed_bytes} bytes")
    if not inflater.eof:
        raise errors.MalformedMessage("body is not valid gzip: truncated stream")
    if inflater.unused_data:
        # A second gzip member, or bytes after the stream: reading only the first would
        # silently apply part of what the producer sent.
        raise errors.MalformedMessage(
            f"body is not valid gzip: {len(inflater.unused_data)} bytes after the "
            f"compressed stream (a second member or trailing data)")
    return out
