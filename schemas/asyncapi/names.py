"""The names the AsyncAPI document uses, and how it refers to them and binds them to AMQP.

The exchange, queue and header names repeat those of ``worker/`` on purpose: the worker
depends on ``schemas``, not the other way round, and importing it here would drag aio-pika
into a pure module.  ``tests/unit/test_asyncapi.py`` checks that both agree.
"""

from __future__ import annotations

from typing import Any

ASYNCAPI_VERSION = "3.0.0"
TITLE = "vbapi-upsert-worker"
VERSION = "0.1.0"  # [project] version in pyproject.toml
AMQP_BINDING_VERSION = "0.3.0"

REQUEST_EXCHANGE = "vbapi"
REQUEST_QUEUE = "vbapi.requests"
REPLY_EXCHANGE = "vbapi.replies"
REPLY_QUEUE = "vbapi.replies"
DEAD_QUEUE = "vbapi.dead"
RETRY_QUEUE = "vbapi.retry.{delay}s"
# retry.delays_s by default, formatted as the queue names format them (%g).
DEFAULT_RETRY_DELAYS = ("1", "5", "30", "120")

PATH_HEADER = "path"
DATABASE_HEADER = "vbasoftware-database"
DRY_RUN_HEADER = "x-upsert-dry-run"

# Names of the non-entity components.  Entity names share the same maps, so a clash is
# refused rather than silently overwriting one with the other.
REQUEST_HEADERS = "RequestHeaders"
REQUEST_PROPERTIES = "RequestProperties"
REPLY_HEADERS = "ReplyHeaders"
REPLY = "Reply"
RETRY_HEADERS = "RetryHeaders"
DEAD_LETTER_HEADERS = "DeadLetterHeaders"
RETRY_COPY = "RetryCopy"
DEAD_LETTER = "DeadLetter"
CORRELATION_ID = "correlationId"


def ref(*pointer: str) -> dict[str, str]:
    """A local ``$ref``, its segments escaped as JSON Pointer requires."""
    escaped = (p.replace("~", "~0").replace("/", "~1") for p in pointer)
    return {"$ref": "#/" + "/".join(escaped)}


def amqp(**binding: Any) -> dict[str, Any]:
    return {"amqp": {**binding, "bindingVersion": AMQP_BINDING_VERSION}}
