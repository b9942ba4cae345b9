"""The gateway's own answers, for what the worker cannot know, in the worker's problem shape
(worker/core/replies.py: type, title, status, detail, instance, debug.activityID), with the
batch's message id where one was chosen, so that a client can retry with it."""

from __future__ import annotations

import orjson
from starlette.responses import Response

from worker.core import errors
from worker.core.replies import new_activity_id
from worker.core.wire import JSON_CONTENT_TYPE
from worker.logs import get_logger

log = get_logger("worker.http.gateway")

# The HTTP headers the gateway puts into AMQP properties, by property: a value too long
# for AMQP is answered naming the header the client sent.
HEADER_OF = {"message_id": "Idempotency-Key", "correlation_id": "Idempotency-Key",
             "content_type": "Content-Type", "content_encoding": "Content-Encoding"}


class GatewayTimeout(errors.UpsertError, status=504, title="Gateway Timeout",
                     problem_type="https://tools.ietf.org/html/rfc7231#section-6.6.5"):
    """The batch is queued, but its reply did not come: in time, or at all."""


def problem(error: errors.UpsertError, path: str, *, message_id: str | None = None,
            activity_id: str | None = None) -> Response:
    """The answer of ``error`` to a request for ``path``."""
    debug = {"activityID": activity_id or new_activity_id()}
    if message_id is not None:
        debug["messageID"] = message_id
    body = {"data": None,
            "error": {"type": error.problem_type, "title": error.title, "status": error.status,
                      "detail": error.detail, "instance": path},
            "debug": debug}
    return Response(orjson.dumps(body), status_code=error.status, media_type=JSON_CONTENT_TYPE)


def too_large(limit: int, path: str) -> Response:
    # Answered at once; the rest of the body is received and dropped by uvicorn, not kept.
    # The connection is not closed on it: most clients (httpx, requests) send the whole
    # body before they read, and would see a reset connection instead of this answer.
    return problem(errors.TooLarge(f"body is over the limit of {limit} bytes"), path)


def property_too_long(name: str, size: int, limit: int, path: str) -> Response:
    """400: the value of AMQP property ``name`` (from an HTTP header) is too long."""
    return problem(errors.MessageRejected(
        f"{HEADER_OF.get(name, name)} is {size} bytes long (UTF-8); at most {limit} are "
        f"allowed"), path)


def reply_missing(why: str, path: str, message_id: str) -> Response:
    """504: the broker confirmed the batch, so it is queued and will be applied; only
    its reply is missing (``why``), which a retry with the same key gets."""
    return problem(GatewayTimeout(
        f"{why}; batch {message_id} was queued and will be applied: retry with "
        f"Idempotency-Key: {message_id} to get its reply (never applied twice)"),
        path, message_id=message_id)


def not_queued(error: BaseException, path: str, message_id: str) -> Response:
    """503: the broker did not confirm the batch (refused, not in time, connection
    gone), so it may or may not be queued; a retry with the same key is safe either
    way.  The broker's own words go to the log only, under the answer's activity id."""
    activity_id = new_activity_id()
    log.warning("publish not confirmed", path=path, message_id=message_id,
                activity_id=activity_id, error=f"{type(error).__name__}: {error}")
    return problem(errors.TransientFailure(
        f"batch {message_id} was not confirmed by the broker, so it may not be "
        f"queued: retry with Idempotency-Key: {message_id} (never applied twice)"),
        path, message_id=message_id, activity_id=activity_id)
