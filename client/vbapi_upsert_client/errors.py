"""The client's errors, one tree under one root:

    ClientError
    ├── UpsertTimeout      (also a TimeoutError) no reply within the timeout; the batch is
    │                      safe in the queue
    ├── ReplyLost          (also a ConnectionError) the connection that would carry the
    │                      reply was lost; the batch is safe in the queue
    ├── BrokerUnreachable  (also a ConnectionError) no broker node accepted a connection
    ├── UnreadableReply    (also a ValueError) a reply whose body is not the worker's shape
    ├── ProblemError       a whole-message error (reply.problem): 400, 401, 403, 404, ...
    ├── ItemsFailed        raise_for_status(): some items were not 2xx
    └── PropertyTooLong    (also a ValueError) a property AMQP cannot carry; nothing was
                           published

What the broker or aio-pika raise (a refused or unconfirmed publish, a closed channel) is
raised as it is.  The worker's own errors (worker/core/errors.py) are another tree: no
name is in both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vbapi_upsert_client.reply import ItemResult, Problem


class ClientError(Exception):
    """The root of the client's errors."""


class UpsertTimeout(ClientError, TimeoutError):
    """No reply within the timeout.  The batch was confirmed by the broker and stays in the
    queue: it will be applied.  Publish it again with the same message_id for its reply."""

    def __init__(self, message_id: str, timeout_s: float) -> None:
        super().__init__(f"no reply for batch {message_id} within {timeout_s:g} s; it was "
                         f"confirmed by the broker and stays queued: publish it again with "
                         f"message_id={message_id!r} to get its reply (never applied twice)")
        self.message_id = message_id


class ReplyLost(ClientError, ConnectionError):
    """The connection its reply would have come on was lost (a broker node failed).  The
    batch was confirmed by the broker and stays queued: it will be applied.  Publish it
    again with the same message_id for its reply."""

    def __init__(self, message_id: str) -> None:
        super().__init__(f"the reply to batch {message_id} was lost with its connection; "
                         f"the batch was confirmed by the broker and stays queued: publish "
                         f"it again with message_id={message_id!r} to get its reply (never "
                         f"applied twice)")
        self.message_id = message_id


class BrokerUnreachable(ClientError, ConnectionError):
    """No node of the client's URLs accepted a connection (each one's error is named)."""


class UnreadableReply(ClientError, ValueError):
    """A reply whose body is not the worker's reply shape."""


class PropertyTooLong(ClientError, ValueError):
    """A property AMQP carries as a short string (message_id, correlation_id, user_id,
    content_type, ...) is longer than 255 UTF-8 bytes.  Raised before anything is sent."""

    def __init__(self, name: str, size: int, limit: int) -> None:
        super().__init__(f"{name} is {size} bytes long in UTF-8; AMQP carries at most "
                         f"{limit}")
        self.name = name
        self.size = size
        self.limit = limit


class ProblemError(ClientError):
    """A whole-message error: the worker answered the batch with ``problem``."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(f"{problem.status} {problem.title}: {problem.detail}")
        self.problem = problem


class ItemsFailed(ClientError):
    """Some items of a batch were not 2xx: ``failed`` lists (index, result) of each."""

    def __init__(self, failed: list[tuple[int, ItemResult]]) -> None:
        shown = "; ".join(f"item {i}: {r.status} {r.body}" for i, r in failed[:5])
        more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
        super().__init__(f"{len(failed)} items failed: {shown}{more}")
        self.failed = failed
