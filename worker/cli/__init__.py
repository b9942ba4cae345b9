"""The ``upsert-worker`` command line.  Thin: parse arguments, call one function each.

One module per command group, each with ``register(commands)`` that adds its parsers and
the handler each dispatches to (``set_defaults(handler=...)``, worker/cli/common.py):

    run.py  migrate.py  publish.py  status.py  dlq.py  messages.py  schemas.py  gateway.py
    console.py  docs.py

A command module imports only what its parser needs; its handler imports the rest when it
runs, so that one command does not load every other's dependencies.  Adding a command: a
module with ``register``, listed in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from worker.cli import console, dlq, docs, gateway, messages, migrate, publish, run, schemas, status
from worker.cli.common import COMMON
from worker.logs import configure_logging
from worker.redaction import redact, secrets_of
from worker.settings import load_settings

# In the order `upsert-worker --help` lists them.
COMMANDS = (run, migrate, publish, status, dlq, messages, schemas, gateway, console, docs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="upsert-worker", parents=[COMMON],
        description="Create-or-update batches from RabbitMQ into PostgreSQL.")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(getattr(args, "config", None))
    except Exception as e:
        # The message names keys, never values (worker.settings.describe).
        print(f"upsert-worker: bad configuration: {e}", file=sys.stderr)
        return 2
    secrets = secrets_of(settings)
    configure_logging(settings.log, secrets)
    try:
        return int(args.handler(settings, args))
    except Exception as e:
        # What Python would print, less the secrets a driver's message may quote.
        print(redact("".join(traceback.format_exception(e)), secrets), file=sys.stderr,
              end="")
        return 1
