"""Which database errors are worth a retry, decided in one place by SQLSTATE class and
exception type: :func:`classify_database_error` (transient, or permanent), and two finer
questions: :func:`is_conflict` (deadlock 40P01, serialization 40001: retried in place a
few times first) and :func:`is_item_error` (a permanent error of one item in a bulk
statement: the writer isolates that item and answers it alone).
"""

from __future__ import annotations

import asyncio
from typing import NoReturn

import asyncpg

from worker.core.errors import TransientFailure

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
    transient whatever their type; server errors are decided by SQLSTATE.  A
    TransientFailure is its own answer: a caller raising the answer ``from exc`` must
    re-raise that one as it is instead, or it becomes its own ``__cause__``.
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


def reraise(failure: BaseException | None, exc: BaseException) -> NoReturn:
    """Raise ``failure`` (what ``exc`` was classified as) caused by ``exc``, or ``exc`` itself
    where there is no failure or it is ``exc`` already: never an exception its own cause."""
    if failure is None or failure is exc:
        raise exc
    raise failure from exc
