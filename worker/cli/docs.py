"""``docs endpoints|asyncapi|client-routes [--output FILE]``: documents generated from the
declarations."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from worker.cli.common import Commands, add_command, add_group
from worker.settings import Settings

_DOCUMENTS = (("endpoints", "the table of every endpoint (markdown)"),
              ("asyncapi", "the AsyncAPI 3.0 document for AMQP producers"),
              ("client-routes", "the client library's path -> entity table (routes.json)"))


def register(commands: Commands) -> None:
    subcommands = add_group(commands, "docs", about="documents generated from the declarations")
    for name, about in _DOCUMENTS:
        document = add_command(subcommands, name, cmd_docs, about=about)
        document.add_argument("--output", metavar="FILE",
                              help="write it here (default: standard output)")


def cmd_docs(settings: Settings, args: argparse.Namespace) -> int:
    """A document generated from the declarations, to a file or standard output."""
    from schemas.asyncapi import render_asyncapi
    from schemas.docs import render_client_routes, render_endpoints
    from schemas.registry import default_registry

    render = {"endpoints": render_endpoints, "asyncapi": render_asyncapi,
              "client-routes": render_client_routes}[args.docs_command]
    text = render(default_registry())
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0
