"""The exception tree: every exception the worker raises is in it.  Each branch says what
happens to the message (or the process) that raised it::

    UpsertError
    ├── MessageRejected        permanent: answered with a problem reply, dead-lettered at once
    │   ├── MalformedMessage       400  bad JSON, body not an array, missing header
    │   ├── Unauthenticated        401  no user_id where the database requires one
    │   ├── Forbidden              403  the producer may not write that database
    │   ├── NotFound               404  no endpoint for the path, or database not configured
    │   ├── TooLarge               413  body, decompressed body or item count over the limit
    │   └── UnsupportedMediaType   415  content type other than JSON
    ├── TransientFailure       retried later through the delay queues; 503 after the last try
    ├── InternalFailure        500  a bug: retried like a transient failure, then dead-lettered
    │   └── PoisonMessage      500  delivered too often without reaching an outcome
    ├── GatewayTimeout         504  the gateway's own answer: the batch's reply did not come
    │                               (worker/http/problems.py)
    ├── OperatorError          never a reply: said to the operator (log, exit status, /readyz)
    │   ├── ConfigurationError     the configuration cannot be used (worker/settings/loading.py)
    │   ├── MigrationRefused       a schema change could lose stored data: the database is
    │   │                          parked, its batches wait as transient failures
    │   │                          (worker/store/migrations.py)
    │   ├── GatewayRefused         the gateway cannot serve as configured (worker/http/exposure.py)
    │   └── NoNodeAnswers          no broker node accepts a connection (worker/amqp/nodes.py)
    └── InternalSignal         control flow inside the store, never a reply nor an error line:
        │                      caught by the module named, which does what it asks
        ├── IsolateItems           redo the transaction item-isolating (rows -> writer)
        ├── GroupRefused           commit the group's batches one by one (writer -> grouping)
        └── _AlreadyProcessed      another delivery committed first: answer from its record
                                   (writer)

Every whole-message reply is built from one of the first four branches: its class line
says the status, the title and the problem type.  A class that sets its own status must set
its own problem type too, or it fails at import (a reply never silently gets
``about:blank``).  The last two branches keep the root's 500 and never reach a reply.

Database errors are sorted into these by ``worker.store.failures``.  Two exceptions stand
outside: the importer's ``ImportFailed`` (schemas/importer/), the declarations' own
(schemas/ knows no worker: an import-linter contract), which the ``import`` command
reports; and the client's, under its own root (client/).
"""

from __future__ import annotations

# The problem types the original (ASP.NET) API answers with.
_RFC7231 = "https://tools.ietf.org/html/rfc7231#section-"


class UpsertError(Exception):
    """Base of every exception the worker raises on purpose.

    A subclass that answers a message says its answer in its class line: ``status``,
    ``title`` and ``problem_type``, each inherited when left out; a new status without its
    own problem type is refused at import."""

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


class OperatorError(UpsertError):
    """Said to the operator, never a reply: the process, a command or a database cannot go
    on as configured."""


class InternalSignal(UpsertError):
    """Control flow between the store's modules: caught by the one that asks for it, never
    a reply, never logged as an error."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
