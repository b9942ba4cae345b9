"""The HTTP gateway: the API's own batch paths, served over the client library.

A system that calls the original HTTP API switches by changing its base URL:

    PUT <batch path>            vbasoftware-database header, JSON array body (gzip allowed),
                                x-api-key or Authorization: Bearer, Idempotency-Key;
                                a dry run with x-upsert-dry-run: true or Prefer: dry-run
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
from vbapi_upsert_client import PropertyTooLong, ReplyLost, UpsertClient, UpsertTimeout
from worker.amqp.topology import declare_topology
from worker.core import errors
from worker.core.wire import DATABASE_HEADER, DRY_RUN_HEADER, JSON_CONTENT_TYPE, flag_header
from worker.http.exposure import GatewayRefused, check_exposure, mode
from worker.http.gateway_openapi import openapi_document
from worker.http.problems import (
    not_queued,
    problem,
    property_too_long,
    reply_missing,
    too_large,
)
from worker.logs import get_logger
from worker.settings import Settings

log = get_logger("worker.http.gateway")
# A name the gateway's broker user is not: publishing with it shows whether the broker
# lets the gateway set other users' ids (the impersonator tag).
_PROBE_USER = "upsert-gateway-impersonation-probe"
# The HTTP headers passed on as AMQP properties of the batch.
_PROPERTY_HEADERS = (("content-type", "content_type"), ("content-encoding", "content_encoding"))


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is over ``limit``: by its Content-Length before it is
    read, else counted as it arrives (a chunked body has no Content-Length to check)."""
    if int(request.headers.get("content-length") or 0) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def dry_run_asked(request: Request) -> tuple[bool, bool]:
    """Whether the request asks for a dry run by ``Prefer: dry-run`` (RFC 7240; answered
    with ``Preference-Applied``), and whether it asks for one at all (that, or the AMQP
    header ``x-upsert-dry-run`` as an HTTP header, read as the worker reads it)."""
    prefer = any(token.split(";", 1)[0].strip().lower() == "dry-run"
                 for value in request.headers.getlist("prefer") for token in value.split(","))
    return prefer, prefer or flag_header(request.headers, DRY_RUN_HEADER)


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
        # Replies pass through as the worker wrote them: their bodies are not decoded into
        # items the gateway would only drop (issue 21).
        self.client = UpsertClient(urls, timeout_s=settings.gateway.timeout_s,
                                   publish_timeout_s=settings.amqp.publish_timeout_s,
                                   parse_replies=False)
        self.metrics = CollectorRegistry()
        self.requests = Counter("upsert_gateway_requests_total", "HTTP requests answered",
                                ["status"], registry=self.metrics)
        self.latency = Histogram("upsert_gateway_request_seconds",
                                 "from the request to its answer", registry=self.metrics)
        self.metrics.register(_ClientFailovers(self.client))
        self._openapi: bytes | None = None

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

    def _user_of(self, request: Request) -> str | None:
        """Whom the batch is published for: the producer whose key the request carries
        (None if none), else (development) the gateway's own broker user."""
        return self.own_user if self.producers is None else self.producer(request)

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
        user_id = self._user_of(request)
        if user_id is None:
            return problem(errors.Unauthenticated(
                "a valid x-api-key (or Authorization: Bearer) is required"), path)
        limit = self.settings.limits.max_body_bytes
        body = await _read_body(request, limit)
        if body is None:
            return too_large(limit, path)
        message_id = request.headers.get("idempotency-key") or uuid.uuid4().hex
        properties: dict[str, Any] = {name: request.headers[header]
                                      for header, name in _PROPERTY_HEADERS
                                      if header in request.headers}
        prefer, dry_run = dry_run_asked(request)
        try:
            reply = await self.client.upsert(
                path, body, database=request.headers.get(DATABASE_HEADER),
                message_id=message_id, user_id=user_id, dry_run=dry_run, **properties)
        except PropertyTooLong as e:
            return property_too_long(e.name, e.size, e.limit, path)
        except UpsertTimeout:
            return reply_missing(f"the worker did not answer within "
                                 f"{self.settings.gateway.timeout_s:g} s", path, message_id)
        except ReplyLost:
            return reply_missing("its reply was lost with the gateway's broker connection",
                                 path, message_id)
        except (AMQPError, ConnectionError, ChannelInvalidStateError, TimeoutError) as e:
            return not_queued(e, path, message_id)
        return Response(reply.body, status_code=reply.status or 500, media_type=JSON_CONTENT_TYPE,
                        headers={"Preference-Applied": "dry-run"} if prefer else None)

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
                             mode=mode(settings.gateway))

        await Server(config).serve()
    finally:
        await gateway.stop()
