"""``gateway``: serve the API's batch paths over HTTP (worker/http/gateway.py)."""

from __future__ import annotations

import argparse

from worker.cli.common import Commands, add_command, serve_until_stopped
from worker.settings import Settings


def register(commands: Commands) -> None:
    add_command(commands, "gateway", cmd_gateway,
                about="serve the API's batch paths over HTTP until SIGTERM/SIGINT")


def cmd_gateway(settings: Settings, args: argparse.Namespace) -> int:
    import uvloop

    from worker.http.exposure import GatewayRefused
    from worker.http.gateway import serve

    # uvloop: the gateway's event loop in C, as uvicorn runs it by default.
    return serve_until_stopped("gateway", lambda: uvloop.run(serve(settings)), GatewayRefused)
