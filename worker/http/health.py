"""The worker's HTTP endpoint: ``/metrics`` (Prometheus), ``/healthz``, ``/readyz``.

A deliberately tiny asyncio HTTP server (one request per connection), so the
endpoint lives in the worker's own event loop: ``/healthz`` answering proves that loop is
not stuck.  ``/readyz`` is 200 only while the worker consumes and every configured
database answered its last ping, taken every ``PING_INTERVAL_S`` in the background (a
probe never waits on a database), and none is parked (its migration refused; the reason
is in the body).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Collection, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from worker import metrics as m
from worker.logs import get_logger
from worker.settings import MetricsSettings

log = get_logger("worker.http.health")

PING_INTERVAL_S = 5.0
PING_TIMEOUT_S = 5.0
# A ping result older than this (the pinger stuck) no longer counts as reachable.
PING_STALE_S = 3 * PING_INTERVAL_S
_REQUEST_TIMEOUT_S = 5.0

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class HealthServer:
    """Serves the endpoints on ``metrics``'s host and port; ``port`` is the bound one
    (useful when configured as 0).  ``databases``: the configured ones' names, each pinged
    with ``ping``."""

    def __init__(self, metrics: MetricsSettings, databases: Collection[str],
                 consuming: Callable[[], bool], ping: Callable[[str], Awaitable[bool]],
                 parked: Callable[[], Mapping[str, str]] = dict) -> None:
        self.metrics = metrics
        self.databases = list(databases)
        self.consuming = consuming
        self.ping = ping
        # Databases whose migration was refused, with the reason (worker/store/migrating.py).
        self.parked = parked
        self.port: int | None = None
        # database -> (answered, monotonic time of the answer)
        self.pings: dict[str, tuple[bool, float]] = {}
        self._server: asyncio.Server | None = None
        self._pinger: asyncio.Task[None] | None = None

    async def start(self, port: int | None = None) -> None:
        host = self.metrics.host
        self._server = await asyncio.start_server(
            self._serve, host, self.metrics.port if port is None else port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._pinger = asyncio.create_task(self._ping_periodically())
        log.info("serving metrics and health probes", host=host, port=self.port)

    async def close(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pinger
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def unready_reasons(self) -> list[str]:
        """Why the worker is not ready; empty when it is."""
        reasons = [] if self.consuming() else ["not consuming"]
        now = time.monotonic()
        for name in self.databases:
            answered, at = self.pings.get(name, (False, 0.0))
            if not answered or now - at > PING_STALE_S:
                reasons.append(f"database {name} unreachable")
        reasons += [f"database {name} parked: {reason}"
                    for name, reason in self.parked().items()]
        return reasons

    async def _ping_periodically(self) -> None:
        while True:
            await asyncio.gather(*(self._ping_one(n) for n in self.databases))
            await asyncio.sleep(PING_INTERVAL_S)

    async def _ping_one(self, name: str) -> None:
        try:
            answered = await asyncio.wait_for(self.ping(name), PING_TIMEOUT_S)
        except Exception:
            answered = False
        self.pings[name] = (answered, time.monotonic())
        m.database_up(name).set(1 if answered else 0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _REQUEST_TIMEOUT_S)
            method, _, rest = request.decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            status, content_type, body = self.respond(method, path)
            head = (f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
                    f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n")
            writer.write(head.encode() + (body if method != "HEAD" else b""))
            await writer.drain()
        except Exception:  # a broken client connection is not the worker's problem
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def respond(self, method: str, path: str) -> tuple[int, str, bytes]:
        text = "text/plain; charset=utf-8"
        if method not in ("GET", "HEAD"):
            return 405, text, b"method not allowed\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY)
        if path == "/healthz":
            return 200, text, b"alive\n"
        if path == "/readyz":
            reasons = self.unready_reasons()
            if reasons:
                return 503, text, ("not ready: " + "; ".join(reasons) + "\n").encode()
            return 200, text, b"ready\n"
        return 404, text, b"not found\n"
