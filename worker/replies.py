"""Reply bodies: the 207 multi-status of a batch and the RFC 7807 problem of a refusal."""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

import orjson

from worker.batch import Batch

MULTI_STATUS = 207

# The problem types the original (ASP.NET) API answers with.
_PROBLEM_TYPES = {
    400: "https://tools.ietf.org/html/rfc7231#section-6.5.1",
    401: "https://tools.ietf.org/html/rfc7235#section-3.1",
    403: "https://tools.ietf.org/html/rfc7231#section-6.5.3",
    404: "https://tools.ietf.org/html/rfc7231#section-6.5.4",
    413: "https://tools.ietf.org/html/rfc7231#section-6.5.11",
    415: "https://tools.ietf.org/html/rfc7231#section-6.5.13",
    500: "https://tools.ietf.org/html/rfc7231#section-6.6.1",
    503: "https://tools.ietf.org/html/rfc7231#section-6.6.4",
}

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_activity_id() -> str:
    """A ULID: 48 bits of milliseconds and 80 random bits, sortable by time."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def batch_reply(batch: Batch, activity_id: str) -> bytes:
    """The 207 body: one entry per request item, same order, same count."""
    data: list[dict[str, Any]] = []
    for ids, outcome in zip(batch.ids, batch.outcomes, strict=True):
        if outcome is None:  # every item is answered; this would be a bug in the store
            data.append({"id": ids, "status": 500, "body": "unexpected failure: no outcome"})
        else:
            data.append({"id": ids, "status": outcome.status, "body": outcome.body})
    return orjson.dumps({"data": data, "error": None, "debug": {"activityID": activity_id}})


def problem_reply(status: int, title: str, detail: str, path: str | None,
                  activity_id: str) -> bytes:
    """A whole-message refusal: ``data`` null and an RFC 7807 ``error``."""
    error = {"type": _PROBLEM_TYPES.get(status, "about:blank"), "title": title,
             "status": status, "detail": detail, "instance": path}
    return orjson.dumps({"data": None, "error": error, "debug": {"activityID": activity_id}})


def item_counts(batch: Batch) -> dict[int, int]:
    """How many items got each status, for logs and metrics."""
    return dict(Counter(o.status for o in batch.outcomes if o is not None))
