"""The console's Starlette app and ``serve``: routes, the signed session, security headers
on every answer, and the sampling of the workers in the background."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

from prometheus_client import generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from worker.console import actions, pages
from worker.console.auth import (
    SESSION_COOKIE,
    SESSION_MAX_AGE_S,
    check_exposure,
    session_secret,
)
from worker.console.context import TEMPLATES, Console, log
from worker.settings import Settings

Handler = Callable[[Console, Request], Awaitable[Response]]
HEADERS = [(b"content-security-policy",
            b"default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
           (b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff"),
           (b"referrer-policy", b"no-referrer"), (b"cache-control", b"no-store")]


class SecurityHeaders:
    """No framing, no inline script, nothing cached, no referrer: on every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await self.app(scope, receive, sending)


STATIC = {"console.js": "text/javascript", "console.css": "text/css"}


async def static(request: Request) -> Response:
    """The page's script and style sheet (files, so that no inline script runs)."""
    name = request.path_params["name"]
    if name not in STATIC:
        return Response("not found", status_code=404, media_type="text/plain")
    return Response((TEMPLATES / name).read_text(), media_type=STATIC[name])


def build_app(console: Console) -> Starlette:
    """The routes; sampling is started by whoever runs the app (``serve``, the tests)."""
    def route(path: str, handler: Handler, method: str = "GET") -> Route:
        return Route(path, partial(handler, console), methods=[method])

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(console.metrics),
                        media_type="text/plain; version=0.0.4")

    routes = [
        route("/", pages.overview), route("/overview/fragment", pages.overview_fragment),
        route("/login", actions.login_page), route("/login", actions.login, "POST"),
        route("/logout", actions.logout, "POST"),
        route("/dead-letters", pages.dead_letters),
        route("/dead-letters/preview", actions.preview, "POST"),
        route("/dead-letters/replay", actions.replay, "POST"),
        route("/dead-letters/purge", actions.purge_page),
        route("/dead-letters/purge", actions.purge, "POST"),
        route("/dead-letters/{id:str}", pages.dead_letter),
        route("/messages", pages.messages),
        Route("/static/{name:str}", static), Route("/metrics", metrics),
    ]
    secret = session_secret(console.settings.console)
    return Starlette(routes=routes, middleware=[
        Middleware(SecurityHeaders),
        Middleware(SessionMiddleware, secret_key=secret, session_cookie=SESSION_COOKIE,
                   max_age=SESSION_MAX_AGE_S, same_site="strict", https_only=False),
    ])


@contextlib.asynccontextmanager
async def sampling(console: Console) -> AsyncIterator[None]:
    """The workers sampled every ``sample_interval_s`` while the block runs."""
    async def loop() -> None:
        while True:
            try:
                await console.sampler.sample()
            except Exception as e:
                log.warning("sampling the workers failed", error=type(e).__name__)
            await asyncio.sleep(console.settings.console.sample_interval_s)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def serve(settings: Settings) -> None:
    """Check the exposure (raising ConsoleRefused), then serve until SIGTERM/SIGINT."""
    import uvicorn

    check_exposure(settings.console)
    console = Console(settings)
    host, port = settings.console.host_port
    config = uvicorn.Config(build_app(console), host=host, port=port, log_config=None,
                            access_log=False, lifespan="off")
    if settings.console.session_key is None and settings.console.operators is not None:
        log.warning("console.session_key is not set: a random key for this process; "
                    "every operator is logged out when it restarts")

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:  # said once the port accepts requests
                log.info("console ready", listen=settings.console.listen,
                         login=settings.console.operators is not None)

    async with sampling(console):
        await Server(config).serve()

