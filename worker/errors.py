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

Database errors are sorted into these by :func:`classify_database_error`, the one place
that decides by SQLSTATE class and exception type.  Two finer questions are answered here
too: :func:`is_conflict` (deadlock 40P01, serialization 40001: retried in place a few times
first) and :func:`is_item_error` (a permanent error of one item in a bulk statement: the
writer isolates that item and answers it alone).
"""

from __future__ import annotations

import asyncio

import asyncpg

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


# SQLSTATEs that go away by themselves.  Classes: 08 connection exceptions, 40 transaction
# rollback (40001 serialization, 40P01 deadlock), 53 insufficient resources (53300 too many
# connections), 57P01..57P03 admin/crash shutdown and cannot-connect-now, 58 system errors.
_TRANSIENT_CLASSES = ("08", "40", "53", "58")
# 25006: a write on a read-only connection, i.e. to a standby: the primary it was made to
# has failed over (see is_on_standby).
_TRANSIENT_CODES = frozenset({"57P01", "57P02", "57P03", "55P03", "57014", "25006"})


def is_transient_sqlstate(sqlstate: str | None) -> bool:
    if not sqlstate:
        return False
    return sqlstate[:2] in _TRANSIENT_CLASSES or sqlstate in _TRANSIENT_CODES


def classify_database_error(exc: BaseException) -> TransientFailure | None:
    """A TransientFailure for errors worth retrying, else None (a permanent error).

    Connection-level failures (refused, reset, timed out, the pool closed under us) are
    transient whatever their type; server errors are decided by SQLSTATE.
    """
    if isinstance(exc, TransientFailure):
        return exc
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = getattr(exc, "sqlstate", None)
        if is_transient_sqlstate(sqlstate):
            return TransientFailure(f"database error {sqlstate}: {exc}")
        return None
    if isinstance(exc, ValueError):
        # asyncpg's client-side DataError (an InterfaceError too): a value it cannot
        # encode, which no retry changes.
        return None
    if isinstance(exc, (OSError, asyncio.TimeoutError, ConnectionError,
                        asyncpg.ConnectionDoesNotExistError)) or _connection_gone(exc):
        return TransientFailure(f"database unreachable: {type(exc).__name__}: {exc}")
    return None


def _connection_gone(exc: BaseException) -> bool:
    """asyncpg's InterfaceError for a connection or pool closed under us ("connection is
    closed", "pool is closing"); its other uses are misuse (a bug), not worth a retry."""
    if isinstance(exc, asyncpg.exceptions.InternalClientError):
        # The driver's protocol state is broken, typically by the server ending the
        # session under it ("another operation is in progress"), or its statement cache
        # is stale: a fresh connection works.
        return True
    return isinstance(exc, asyncpg.InterfaceError) and any(
        word in str(exc) for word in ("closed", "closing"))


# Conflicts between concurrent transactions: gone as soon as the other one finished, so
# they are worth a few quick retries in place before a trip through the delay queues.
_CONFLICT_CODES = frozenset({"40001", "40P01"})


def is_conflict(exc: BaseException) -> bool:
    """A deadlock or serialization failure: retry the transaction at once."""
    return getattr(exc, "sqlstate", None) in _CONFLICT_CODES


def is_on_standby(exc: BaseException) -> bool:
    """The connection went to a standby (the old primary, back after a failover, say):
    the pool's connections must be made again, to find the new primary."""
    return getattr(exc, "sqlstate", None) == "25006"


def is_item_error(exc: BaseException) -> bool:
    """A permanent error that one item of a bulk statement can cause (a constraint, a value
    the database or the driver refuses): worth isolating, not retrying."""
    if classify_database_error(exc) is not None:
        return False
    # Server-reported, or a value the driver could not encode (a ValueError); not an
    # InterfaceError of misuse, which would fail every item alike.
    return isinstance(exc, asyncpg.PostgresError) or (
        isinstance(exc, asyncpg.InterfaceError) and isinstance(exc, ValueError))
