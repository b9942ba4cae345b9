"""The worker's reply as a producer reads it: its status, each item's result, or the
whole-message problem (docs/contract.md, section 3).  The errors it raises are in
:mod:`vbapi_upsert_client.errors`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from aio_pika.abc import AbstractIncomingMessage

from vbapi_upsert_client.errors import ItemsFailed, ProblemError
from vbapi_upsert_client.wire import STATUS_HEADER


@dataclass(frozen=True)
class Problem:
    """A whole-message error (RFC 7807)."""

    status: int
    title: str
    detail: str | None
    type: str
    instance: str | None


@dataclass(frozen=True)
class ItemResult:
    """The answer for one item: 201, 200, 400, 404, 409 or 500."""

    status: int
    id: list[dict[str, Any]]
    body: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


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
    # True for the answer to a dry run: nothing was written.
    dry_run: bool = False
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
        debug = decoded.get("debug") or {}
        return cls(status=int(status) if isinstance(status, int) else 0, body=message.body,
                   headers=headers, message_id=message_id, items=items, problem=problem,
                   activity_id=debug.get("activityID"), dry_run=debug.get("dryRun") is True,
                   message=message)

    def raise_for_status(self) -> Reply:
        """Raise ProblemError for a whole-message error, ItemsFailed if any item is not 2xx."""
        if self.problem is not None:
            raise ProblemError(self.problem)
        failed = [(i, r) for i, r in enumerate(self.items) if not r.ok]
        if failed:
            raise ItemsFailed(failed)
        return self
