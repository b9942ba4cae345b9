"""The worker's reply as a producer reads it, and the client's errors, one tree:

    UpsertError
    ├── UpsertTimeout      no reply within the timeout; the batch is safe in the queue
    ├── ReplyLost          the connection that would carry the reply was lost; the batch
    │                      is safe in the queue
    ├── ProblemError       a whole-message error (reply.problem): 400, 401, 403, 404, ...
    ├── ItemsFailed        raise_for_status(): some items were not 2xx
    └── PropertyTooLong    (also a ValueError) a property AMQP cannot carry; nothing was
                           published
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from aio_pika.abc import AbstractIncomingMessage

from worker.core.wire import STATUS_HEADER


class UpsertError(Exception):
    """Base of the client's errors."""


class UpsertTimeout(UpsertError, TimeoutError):
    """No reply within the timeout.  The batch was confirmed by the broker and stays in the
    queue: it will be applied.  Publish it again with the same message_id for its reply."""

    def __init__(self, message_id: str, timeout_s: float) -> None:
        super().__init__(f"no reply for batch {message_id} within {timeout_s:g} s; it was "
                         f"confirmed by the broker and stays queued: publish it again with "
                         f"message_id={message_id!r} to get its reply (never applied twice)")
        self.message_id = message_id


class ReplyLost(UpsertError, ConnectionError):
    """The connection its reply would have come on was lost (a broker node failed).  The
    batch was confirmed by the broker and stays queued: it will be applied.  Publish it
    again with the same message_id for its reply."""

    def __init__(self, message_id: str) -> None:
        super().__init__(f"the reply to batch {message_id} was lost with its connection; "
                         f"the batch was confirmed by the broker and stays queued: publish "
                         f"it again with message_id={message_id!r} to get its reply (never "
                         f"applied twice)")
        self.message_id = message_id


class PropertyTooLong(UpsertError, ValueError):
    """A property AMQP carries as a short string (message_id, correlation_id, user_id,
    content_type, ...) is longer than 255 UTF-8 bytes.  Raised before anything is sent."""

    def __init__(self, name: str, size: int, limit: int) -> None:
        super().__init__(f"{name} is {size} bytes long in UTF-8; AMQP carries at most "
                         f"{limit}")
        self.name = name
        self.size = size
        self.limit = limit


@dataclass(frozen=True)
class Problem:
    """A whole-message error (RFC 7807)."""

    status: int
    title: str
    detail: str | None
    type: str
    instance: str | None


class ProblemError(UpsertError):
    def __init__(self, problem: Problem) -> None:
        super().__init__(f"{problem.status} {problem.title}: {problem.detail}")
        self.problem = problem


@dataclass(frozen=True)
class ItemResult:
    """The answer for one item: 201, 200, 400, 404, 409 or 500."""

    status: int
    id: list[dict[str, Any]]
    body: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class ItemsFailed(UpsertError):
    def __init__(self, failed: list[tuple[int, ItemResult]]) -> None:
        shown = "; ".join(f"item {i}: {r.status} {r.body}" for i, r in failed[:5])
        more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
        super().__init__(f"{len(failed)} items failed: {shown}{more}")
        self.failed = failed


@dataclass(frozen=True)
class Reply:
    """The worker's reply to one batch."""

    status: int                      # 207, or the problem's status
    body: bytes                      # as the worker sent it
    headers: dict[str, Any]
    message_id: str
    items: list[ItemResult] = field(default_factory=list)
    problem: Problem | None = None
    activity_id: str | None = None
    # The reply message itself, for its AMQP properties.
    message: AbstractIncomingMessage | None = field(default=None, compare=False, repr=False)

    @classmethod
    def parse(cls, message: AbstractIncomingMessage, message_id: str, *,
              body: bool = True) -> Reply:
        """The reply in ``message``; with ``body=False`` its body is not looked into (a
        benchmark's peers answer with other bodies)."""
        headers = dict(message.headers or {})
        status = headers.get(STATUS_HEADER)
        if not body:
            return cls(status=int(status) if isinstance(status, int) else 0,
                       body=message.body, headers=headers, message_id=message_id,
                       message=message)
        decoded = orjson.loads(message.body)
        error = decoded.get("error")
        problem = None if not error else Problem(
            status=int(error.get("status", 0)), title=str(error.get("title", "")),
            detail=error.get("detail"), type=str(error.get("type", "about:blank")),
            instance=error.get("instance"))
        items = [ItemResult(int(d["status"]), d["id"], d["body"])
                 for d in decoded.get("data") or []]
        return cls(status=int(status) if isinstance(status, int) else 0, body=message.body,
                   headers=headers, message_id=message_id, items=items, problem=problem,
                   activity_id=(decoded.get("debug") or {}).get("activityID"),
                   message=message)

    def raise_for_status(self) -> Reply:
        """Raise ProblemError for a whole-message error, ItemsFailed if any item is not 2xx."""
        if self.problem is not None:
            raise ProblemError(self.problem)
        failed = [(i, r) for i, r in enumerate(self.items) if not r.ok]
        if failed:
            raise ItemsFailed(failed)
        return self
