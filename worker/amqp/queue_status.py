"""The ``status`` command: what the broker says about the worker's queues.

Over AMQP 0-9-1 a passive ``queue.declare`` answers with the ready messages and the
consumers of a queue, nothing more: the count of delivered but unacknowledged messages is
not in the protocol.  Where RabbitMQ's management API answers (optional; the URL is
``amqp.management_url``, else derived from the AMQP URL with port 15672), the unacknowledged
counts come from it; otherwise they are reported as unknown, and the report says why.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import orjson
from aiormq.exceptions import ChannelClosed

from worker.amqp.deadletters import DeadLetterQueue
from worker.amqp.letters import group_by_status
from worker.amqp.nodes import connect_first
from worker.amqp.topology import worker_queue_names
from worker.settings import AmqpSettings, LimitsSettings, RetrySettings

MANAGEMENT_TIMEOUT_S = 2.0


@dataclass
class QueueState:
    name: str
    exists: bool
    ready: int | None = None
    unacknowledged: int | None = None
    consumers: int | None = None


@dataclass
class Status:
    queues: list[QueueState]
    # Where unacknowledged counts came from, or why they are unknown.
    unacknowledged_source: str
    dead_letters_by_status: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "queues": [vars(q) for q in self.queues],
            "unacknowledged_source": self.unacknowledged_source,
            "dead_letters": {"total": sum(self.dead_letters_by_status.values()),
                             "by_status": self.dead_letters_by_status},
        }


async def broker_status(amqp: AmqpSettings, retry: RetrySettings,
                        limits: LimitsSettings, *, count_dead: bool = True) -> Status:
    """Per queue (those of the ``retry`` delays among them): ready, unacknowledged (if
    known) and consumers; dead letters by status (their bodies read within ``limits``),
    unless ``count_dead`` is False (the console's overview: reading them holds the queue)."""
    queues = await _queue_states(amqp, worker_queue_names(retry.delays_s))
    unacked, source = await asyncio.to_thread(management_unacknowledged, amqp)
    for state in queues:
        if state.exists and unacked is not None:
            state.unacknowledged = unacked.get(state.name)
    dead = [q for q in queues
            if count_dead and q.name.endswith(".dead") and q.exists and q.ready]
    by_status = (group_by_status(await DeadLetterQueue(amqp, limits, retry).letters())
                 if dead else {})
    return Status(queues, source, by_status)


async def _queue_states(amqp: AmqpSettings, names: list[str]) -> list[QueueState]:
    """What a passive declaration says of each queue."""
    connection = await connect_first(amqp.urls, timeout_s=amqp.connect_timeout_s,
                                     connection_name="upsert-worker status")
    queues: list[QueueState] = []
    async with connection:
        for name in names:
            # A passive declare of a missing queue closes its channel: one channel each.
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue(name, passive=True)
            except ChannelClosed:
                queues.append(QueueState(name, exists=False))
                continue
            result = queue.declaration_result
            queues.append(QueueState(name, exists=True, ready=result.message_count,
                                     consumers=result.consumer_count))
            with contextlib.suppress(Exception):
                await channel.close()
    return queues


def management_url(amqp: AmqpSettings) -> str:
    """The management API's base URL, with credentials (the AMQP ones unless given)."""
    if amqp.management_url is not None:
        return amqp.management_url.get_secret_value().rstrip("/")
    # The first node's: with a cluster, any node's API tells about every queue.
    node = urlsplit(amqp.urls[0])
    scheme = "https" if node.scheme == "amqps" else "http"
    auth = f"{node.username or 'guest'}:{node.password or 'guest'}@"
    return f"{scheme}://{auth}{node.hostname or 'localhost'}:15672"


def _vhost(amqp: AmqpSettings) -> str:
    path = urlsplit(amqp.urls[0]).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def management_unacknowledged(amqp: AmqpSettings) -> tuple[dict[str, int] | None, str]:
    """Unacknowledged counts by queue from the management API, or None and the reason."""
    base = urlsplit(management_url(amqp))
    host = base.hostname or "localhost"
    port = f":{base.port}" if base.port else ""
    url = (f"{base.scheme}://{host}{port}{base.path}/api/queues/"
           f"{quote(_vhost(amqp), safe='')}?columns=name,messages_unacknowledged")
    request = urllib.request.Request(url)
    credentials = f"{unquote(base.username or '')}:{unquote(base.password or '')}"
    request.add_header("Authorization",
                       "Basic " + base64.b64encode(credentials.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=MANAGEMENT_TIMEOUT_S) as response:
            rows = orjson.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        return None, (f"unknown: AMQP does not report unacknowledged messages and the "
                      f"management API at {base.scheme}://{host}{port} did not answer "
                      f"({reason})")
    counts = {row["name"]: int(row.get("messages_unacknowledged") or 0)
              for row in rows if isinstance(row, dict) and "name" in row}
    return counts, f"management API at {base.scheme}://{host}{port}"
