"""``console``: serve the operator console over HTTP (worker/console/)."""

from __future__ import annotations

import argparse
import asyncio

from worker.cli.common import Commands, add_command, serve_until_stopped
from worker.settings import Settings


def register(commands: Commands) -> None:
    add_command(commands, "console", cmd_console,
                about="serve the operator console (web) until SIGTERM/SIGINT")


def cmd_console(settings: Settings, args: argparse.Namespace) -> int:
    from worker.console.app import serve
    from worker.console.auth import ConsoleRefused

    return serve_until_stopped("console", lambda: asyncio.run(serve(settings)), ConsoleRefused)
