"""Reply bodies: the 207 multi-status of a batch (its plan with the outcome of the attempt
that committed) and the RFC 7807 problem of a refusal."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import orjson

from worker.core.batch import ItemAnswer, ItemStatus, Outcome, Plan
from worker.core.errors import UpsertError

MULTI_STATUS = 207

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_activity_id() -> str:
    """A ULID: 48 bits of milliseconds and 80 random bits, sortable by time."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def batch_reply(plan: Plan, outcome: Outcome, *, processed_before: bool = False) -> bytes:
    """The 207 body: one entry per request item, same order, same count.  A dry run's
    says so in ``debug.dryRun``, and in ``debug.processedBefore`` when its producer's
    message_id is recorded (a real send of it would get that recorded reply instead)."""
    data: list[dict[str, Any]] = []
    for ids, answer in zip(plan.ids, outcome.answers, strict=True):
        if answer is None:  # every item is answered; this would be a bug in the writer
            data.append({"id": ids, "status": ItemStatus.FAILED,
                         "body": "unexpected failure: no outcome"})
        else:
            data.append({"id": ids, "status": answer.status, "body": answer.body})
    return orjson.dumps({"data": data, "error": None,
                         "debug": _debug(plan.activity_id, plan.dry_run, processed_before)})


def problem_reply(error: UpsertError, path: str | None, activity_id: str, *,
                  dry_run: bool = False) -> bytes:
    """A whole-message refusal: ``data`` null and an RFC 7807 ``error``, as the error's
    class (worker/core/errors.py) says."""
    problem = {"type": error.problem_type, "title": error.title, "status": error.status,
               "detail": error.detail, "instance": path}
    return orjson.dumps({"data": None, "error": problem,
                         "debug": _debug(activity_id, dry_run, False)})


def _debug(activity_id: str, dry_run: bool, processed_before: bool) -> dict[str, Any]:
    debug: dict[str, Any] = {"activityID": activity_id}
    if dry_run:
        debug["dryRun"] = True
    if processed_before:
        debug["processedBefore"] = True
    return debug


def status_counts(answers: Iterable[ItemAnswer | None]) -> dict[int, int]:
    """How many items got each status (of those answered), for logs and metrics."""
    return dict(Counter(a.status for a in answers if a is not None))
