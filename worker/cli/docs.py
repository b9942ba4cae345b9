"""``docs endpoints|asyncapi [--output FILE]``: documents generated from the declarations."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from worker.cli.common import Commands, add_command
from worker.settings import Settings

_DOCUMENTS = (("endpoints", "the table of every endpoint (markdown)"),
              ("asyncapi", "the AsyncAPI 3.0 document for AMQP producers"))


def register(commands: Commands) -> None:
    group = add_command(commands, "docs", about="documents generated from the declarations")
    subcommands = group.add_subparsers(dest="docs_command", required=True)
    for name, about in _DOCUMENTS:
        document = add_command(subcommands, name, cmd_docs, about=about)
        document.add_argument("--output", metavar="FILE",
                              help="write it here (default: standard output)")


def cmd_docs(settings: Settings, args: argparse.Namespace) -> int:
    """A document generated from the declarations, to a file or standard output."""
    from schemas.asyncapi import render_asyncapi
    from schemas.docs import render_endpoints
    from schemas.registry import default_registry

    render = {"endpoints": render_endpoints, "asyncapi": render_asyncapi}[args.docs_command]
    text = render(default_registry())
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0
