"""The HTTP gateway: the API's own batch paths, served over the client library.

A system that calls the original HTTP API switches by changing its base URL:

    PUT <batch path>            vbasoftware-database header, JSON array body (gzip allowed),
                                x-api-key or Authorization: Bearer, Idempotency-Key
    GET /openapi.json           the paths of every declared entity (OpenAPI 3)
    GET /healthz, /readyz, /metrics

The gateway validates nothing itself: it publishes the request as a batch, as a producer
would, and answers with the worker's reply body as is: 207, or the problem's own status.
Only what the worker cannot know is answered here, in the worker's problem shape (type,
title, status, detail, instance, debug.activityID): 401 for a missing or unknown key, 400
for an Idempotency-Key (or Content-Type, Content-Encoding) too long for AMQP, 413 for a body
over the limit as soon as it is (before it is read whole, chunked or not), 503 when the
broker did not confirm the batch, and 504 when the batch is queued but its reply did not
come: not in time, or lost with the broker connection (a retry with the same
Idempotency-Key gets its reply).  Broker errors are logged, never shown to HTTP clients.

Without api_keys anyone who reaches the gateway may write every database: it then listens
on loopback only (development), unless ``[gateway] allow_anonymous = true``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
import orjson
from aiormq.exceptions import AMQPError, ChannelInvalidStateError
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Send

from schemas.registry import default_registry
from worker.amqp.topology import declare_topology
from worker.client import PropertyTooLong, ReplyLost, UpsertClient, UpsertTimeout
from worker.core import errors
from worker.core.replies import new_activity_id
from worker.core.wire import DATABASE_HEADER, JSON_CONTENT_TYPE
from worker.http.gateway_openapi import openapi_document
from worker.logs import get_logger
from worker.settings import GatewaySettings, Settings

log = get_logger("worker.http.gateway")
# A name the gateway's broker user is not: publishing with it shows whether the broker
# lets the gateway set other users' ids (the impersonator tag).
_PROBE_USER = "upsert-gateway-impersonation-probe"


# The HTTP headers the gateway puts into AMQP properties, by property: a value too long
# for AMQP is answered naming the header the client sent.
_HEADER_OF = {"message_id": "Idempotency-Key", "correlation_id": "Idempotency-Key",
              "content_type": "Content-Type", "content_encoding": "Content-Encoding"}


class GatewayRefused(Exception):
    """The gateway cannot serve as configured (said at start, before any request)."""


class GatewayTimeout(errors.UpsertError, status=504, title="Gateway Timeout",
                     problem_type="https://tools.ietf.org/html/rfc7231#section-6.6.5"):
    """The batch is queued, but its reply did not come: in time, or at all."""


def _problem(error: errors.UpsertError, path: str, *, message_id: str | None = None,
             activity_id: str | None = None) -> Response:
    """The gateway's own answer, in the worker's problem shape (worker/core/replies.py), with
    the batch's message id where one was chosen, so that a client can retry with it."""
    debug = {"activityID": activity_id or new_activity_id()}
    if message_id is not None:
        debug["messageID"] = message_id
    body = {"data": None,
            "error": {"type": error.problem_type, "title": error.title, "status": error.status,
                      "detail": error.detail, "instance": path},
            "debug": debug}
    return Response(orjson.dumps(body), status_code=error.status, media_type=JSON_CONTENT_TYPE)


def _too_large(limit: int, path: str) -> Response:
    # Answered at once; the rest of the body is received and dropped by uvicorn, not kept.
    # The connection is not closed on it: most clients (httpx, requests) send the whole
    # body before they read, and would see a reset connection instead of this answer.
    return _problem(errors.TooLarge(f"body is over the limit of {limit} bytes"), path)


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is over ``limit``: counted as it arrives, because a
    chunked body has no Content-Length to check first."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def check_exposure(settings: GatewaySettings) -> None:
    """Refuse to serve anonymously beyond this machine unless told to, explicitly."""
    host, port = settings.host_port
    if settings.api_keys is not None or settings.allow_anonymous or is_loopback(host):
        return
    raise GatewayRefused(
        f"listen = {settings.listen!r} is not loopback, and without [gateway.api_keys] "
        f"anyone who reaches it could write every database. Either set API keys: a "
        f"[gateway.api_keys] table of producer = \"sha256:<hex digest of its key>\" "
        f"(printf %s \"$KEY\" | sha256sum); or allow anonymous access explicitly: "
        f"[gateway] allow_anonymous = true (UPSERT_GATEWAY__ALLOW_ANONYMOUS=true); or, for "
        f"development, listen on loopback (127.0.0.1:{port})")


class _ClientFailovers(Collector):
    """The client's count of broker failovers, read when /metrics is."""

    def __init__(self, client: UpsertClient) -> None:
        self.client = client

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("upsert_gateway_broker_failovers",
                                  "Broker connections lost and made again",
                                  value=self.client.failovers)


class Gateway:
    """The gateway's state: settings, keys, the client, metrics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        urls = settings.amqp.urls
        self.own_user = unquote(urlsplit(urls[0]).username or "guest")
        keys = settings.gateway.api_keys
        self.producers = None if keys is None else {
            digest.removeprefix("sha256:"): name for name, digest in keys.items()}
        self.client = UpsertClient(urls, timeout_s=settings.gateway.timeout_s,
                                   publish_timeout_s=settings.amqp.publish_timeout_s)
        self.metrics = CollectorRegistry()
        self.requests = Counter("upsert_gateway_requests_total", "HTTP requests answered",
                                ["status"], registry=self.metrics)
        self.latency = Histogram("upsert_gateway_request_seconds",
                                 "from the request to its answer", registry=self.metrics)
        self.metrics.register(_ClientFailovers(self.client))
        self._openapi: bytes | None = None

    @property
    def mode(self) -> str:
        if self.producers is not None:
            return "api keys"
        return "development" if is_loopback(self.settings.gateway.host_port[0]) else "anonymous"

    async def start(self) -> None:
        check_exposure(self.settings.gateway)  # before anything is connected
        await self.client.open()
        await self.declare_topology()
        if self.producers is not None:
            await self.check_impersonation()

    async def stop(self) -> None:
        await self.client.close()

    async def declare_topology(self) -> None:
        """The worker's exchanges and queues, so that a batch sent before any worker
        started waits in the queue.  A broker user without configure permission leaves
        that to the workers."""
        assert self.client.connection is not None
        channel = await self.client.connection.channel()
        try:
            await declare_topology(channel, self.settings.retry.delays_s)
        except AMQPError as e:
            log.warning("could not declare the topology; the workers will", error=str(e))
        finally:
            if not channel.is_closed:
                await channel.close()

    async def check_impersonation(self) -> None:
        """Publishing with another user's id needs the broker's impersonator tag: without
        it the broker closes the channel, and every request would fail.  Refuse now."""
        assert self.client.connection is not None
        channel = await self.client.connection.channel(publisher_confirms=True)
        try:
            await channel.default_exchange.publish(
                aio_pika.Message(b"", user_id=_PROBE_USER), routing_key="", timeout=10)
        except Exception as e:
            raise GatewayRefused(
                f"the broker user '{self.own_user}' may not publish for the producers of "
                f"[gateway.api_keys]: give it the impersonator tag (rabbitmqctl "
                f"set_user_tags {self.own_user} impersonator), or remove the api_keys "
                f"table for development mode ({e})") from e
        finally:
            if not channel.is_closed:
                await channel.close()

    def producer(self, request: Request) -> str | None:
        """The producer whose key the request carries, or None."""
        key = request.headers.get("x-api-key")
        if key is None:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            key = token.strip() if scheme.lower() == "bearer" else None
        if not key or self.producers is None:
            return None
        return self.producers.get(hashlib.sha256(key.encode()).hexdigest())

    async def put(self, request: Request) -> Response:
        started = time.perf_counter()
        response = await self._put(request)
        self.requests.labels(status=str(response.status_code)).inc()
        self.latency.observe(time.perf_counter() - started)
        return response

    async def _put(self, request: Request) -> Response:
        # The path as sent: percent-encoded segments stay encoded for the worker to split.
        path = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
        user_id = self.own_user
        if self.producers is not None:
            producer = self.producer(request)
            if producer is None:
                return _problem(errors.Unauthenticated(
                    "a valid x-api-key (or Authorization: Bearer) is required"), path)
            user_id = producer
        limit = self.settings.limits.max_body_bytes
        if int(request.headers.get("content-length") or 0) > limit:
            return _too_large(limit, path)
        body = await _read_body(request, limit)
        if body is None:
            return _too_large(limit, path)
        message_id = request.headers.get("idempotency-key") or uuid.uuid4().hex
        properties: dict[str, Any] = {}
        for header, name in (("content-type", "content_type"),
                             ("content-encoding", "content_encoding")):
            if header in request.headers:
                properties[name] = request.headers[header]
        try:
            reply = await self.client.upsert(
                path, body, database=request.headers.get(DATABASE_HEADER),
                message_id=message_id, user_id=user_id, **properties)
        except PropertyTooLong as e:
            return _problem(errors.MessageRejected(
                f"{_HEADER_OF.get(e.name, e.name)} is {e.size} bytes long (UTF-8); at most "
                f"{e.limit} are allowed"), path)
        except (UpsertTimeout, ReplyLost) as e:
            return self._reply_missing(e, path, message_id)
        except (AMQPError, ConnectionError, ChannelInvalidStateError, TimeoutError) as e:
            return self._not_queued(e, path, message_id)
        return Response(reply.body, status_code=reply.status or 500, media_type=JSON_CONTENT_TYPE)

    def _reply_missing(self, error: UpsertTimeout | ReplyLost, path: str,
                       message_id: str) -> Response:
        """504: the broker confirmed the batch, so it is queued and will be applied; only
        its reply is missing, which a retry with the same key gets."""
        why = (f"the worker did not answer within {self.settings.gateway.timeout_s:g} s"
               if isinstance(error, UpsertTimeout) else
               "its reply was lost with the gateway's broker connection")
        return _problem(GatewayTimeout(
            f"{why}; batch {message_id} was queued and will be applied: retry with "
            f"Idempotency-Key: {message_id} to get its reply (never applied twice)"),
            path, message_id=message_id)

    def _not_queued(self, error: BaseException, path: str, message_id: str) -> Response:
        """503: the broker did not confirm the batch (refused, not in time, connection
        gone), so it may or may not be queued; a retry with the same key is safe either
        way.  The broker's own words go to the log only, under the answer's activity id."""
        activity_id = new_activity_id()
        log.warning("publish not confirmed", path=path, message_id=message_id,
                    activity_id=activity_id, error=f"{type(error).__name__}: {error}")
        return _problem(errors.TransientFailure(
            f"batch {message_id} was not confirmed by the broker, so it may not be "
            f"queued: retry with Idempotency-Key: {message_id} (never applied twice)"),
            path, message_id=message_id, activity_id=activity_id)

    async def openapi(self, request: Request) -> Response:
        if self._openapi is None:  # built on first use: start-up stays fast
            self._openapi = orjson.dumps(openapi_document(default_registry()))
        return Response(self._openapi, media_type=JSON_CONTENT_TYPE)

    async def healthz(self, request: Request) -> Response:
        return Response(b"ok\n", media_type="text/plain")

    async def readyz(self, request: Request) -> Response:
        connection = self.client.connection
        ready = connection is not None and not connection.is_closed
        return Response(b"ready\n" if ready else b"not ready\n",
                        status_code=200 if ready else 503, media_type="text/plain")

    async def prometheus(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics),
                        media_type="text/plain; version=0.0.4")


ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


def build_app(gateway: Gateway) -> ASGIApp:
    """The routes; the gateway is started and stopped by whoever runs the app.

    A batch (PUT) goes straight to the gateway, past Starlette's routing and middleware:
    on the gateway's busiest path those cost CPU for nothing (it matches every path, and
    it answers its own errors)."""
    others = Starlette(routes=[
        Route("/openapi.json", gateway.openapi, methods=["GET"]),
        Route("/healthz", gateway.healthz, methods=["GET"]),
        Route("/readyz", gateway.readyz, methods=["GET"]),
        Route("/metrics", gateway.prometheus, methods=["GET"]),
    ])

    async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "PUT":
            response = await gateway.put(Request(scope, receive))
            await response(scope, receive, send)
        else:
            await others(scope, receive, send)

    return app


async def serve(settings: Settings) -> None:
    """Start (raising GatewayRefused when it cannot serve as configured), then answer
    requests until SIGTERM/SIGINT (uvicorn's signal handling)."""
    import uvicorn

    gateway = Gateway(settings)
    await gateway.start()
    try:
        host, port = settings.gateway.host_port
        # httptools parses HTTP in C; h11's parsing in Python would be most of the
        # gateway's CPU per request (BENCHMARKS.md).
        config = uvicorn.Config(build_app(gateway), host=host, port=port, log_config=None,
                                access_log=False, lifespan="off", http="httptools")

        class Server(uvicorn.Server):
            async def startup(self, sockets: Any = None) -> None:
                await super().startup(sockets)
                if self.started:  # said once the port accepts requests
                    log.info("gateway ready", listen=settings.gateway.listen,
                             mode=gateway.mode)

        await Server(config).serve()
    finally:
        await gateway.stop()
