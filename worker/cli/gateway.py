"""``gateway``: serve the API's batch paths over HTTP (worker/http/gateway.py)."""

from __future__ import annotations

import argparse
import sys

from worker.cli.common import Commands, add_command
from worker.settings import Settings


def register(commands: Commands) -> None:
    add_command(commands, "gateway", cmd_gateway,
                about="serve the API's batch paths over HTTP until SIGTERM/SIGINT")


def cmd_gateway(settings: Settings, args: argparse.Namespace) -> int:
    import uvloop

    from worker.http.exposure import GatewayRefused
    from worker.http.gateway import serve

    try:
        # uvloop: the gateway's event loop in C, as uvicorn runs it by default.
        uvloop.run(serve(settings))
    except GatewayRefused as e:
        print(f"upsert-worker gateway: refusing to start: {e}", file=sys.stderr)
        return 2
    return 0
