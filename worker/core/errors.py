"""The exception tree.  Each branch says what happens to the message that raised it::

    UpsertError
    ├── MessageRejected        permanent: answered with a problem reply, dead-lettered at once
    │   ├── MalformedMessage       400  bad JSON, body not an array, missing header
    │   ├── Unauthenticated        401  no user_id where the database requires one
    │   ├── Forbidden              403  the producer may not write that database
    │   ├── NotFound               404  no endpoint for the path, or database not configured
    │   ├── TooLarge               413  body, decompressed body or item count over the limit
    │   └── UnsupportedMediaType   415  content type other than JSON
    ├── TransientFailure       retried later through the delay queues; 503 after the last try
    └── InternalFailure        500  a bug: retried like a transient failure, then dead-lettered
        └── PoisonMessage      500  delivered too often without reaching an outcome

Every whole-message reply is built from one of these: its class line says the status, the
title and the problem type.  A class that sets its own status must set its own problem
type too, or it fails at import (a reply never silently gets ``about:blank``).

Database errors are sorted into these by ``worker.store.failures``.
"""

from __future__ import annotations

# The problem types the original (ASP.NET) API answers with.
_RFC7231 = "https://tools.ietf.org/html/rfc7231#section-"


class UpsertError(Exception):
    """Base of every error the worker raises on purpose: a whole-message answer.

    A subclass says its answer in its class line: ``status``, ``title`` and
    ``problem_type``, each inherited when left out; a new status without its own problem
    type is refused at import."""

    status = 500
    title = "Internal Server Error"
    problem_type = _RFC7231 + "6.6.1"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def __init_subclass__(cls, *, status: int | None = None, title: str | None = None,
                          problem_type: str | None = None, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if status is not None and problem_type is None:
            raise TypeError(f"{cls.__name__} sets status {status} but no problem_type")
        cls.status = status or cls.status
        cls.title = title or cls.title
        cls.problem_type = problem_type or cls.problem_type


class MessageRejected(UpsertError, status=400, title="Bad Request",
                      problem_type=_RFC7231 + "6.5.1"):
    """The whole message is refused; the producer must fix it."""


class MalformedMessage(MessageRejected, title="Malformed message"):
    """Bad JSON, a body that is no array of items, a missing header."""


class Unauthenticated(MessageRejected, status=401, title="Unauthorized",
                      problem_type="https://tools.ietf.org/html/rfc7235#section-3.1"):
    """No user_id where the database names its producers."""


class Forbidden(MessageRejected, status=403, title="Forbidden",
                problem_type=_RFC7231 + "6.5.3"):
    """The producer may not write that database."""


class NotFound(MessageRejected, status=404, title="Not Found",
               problem_type=_RFC7231 + "6.5.4"):
    """No endpoint for the path, or the database is not configured."""


class TooLarge(MessageRejected, status=413, title="Payload Too Large",
               problem_type=_RFC7231 + "6.5.11"):
    """Body, decompressed body or item count over the limit."""


class UnsupportedMediaType(MessageRejected, status=415, title="Unsupported Media Type",
                           problem_type=_RFC7231 + "6.5.13"):
    """A content type other than JSON, an encoding other than gzip."""


class TransientFailure(UpsertError, status=503, title="Service Unavailable",
                       problem_type=_RFC7231 + "6.6.4"):
    """Worth trying again later: an outage, a deadlock, a serialization failure."""


class InternalFailure(UpsertError):
    """An unexpected failure (a bug): retried a few times, then answered and dead-lettered."""

    @classmethod
    def of(cls, exc: BaseException) -> InternalFailure:
        return cls(f"unexpected failure: {type(exc).__name__}")


class PoisonMessage(InternalFailure, title="Poison message"):
    """Delivered more often than allowed without an outcome: it keeps killing workers."""
