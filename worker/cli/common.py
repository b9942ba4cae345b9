"""What every command module uses: ``--config`` anywhere on the line, adding a command with
its handler, and messages masked of the configuration's secrets."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TypeAlias

from worker.redaction import redact, secrets_of
from worker.settings import Settings

# A command's handler: the whole configuration (the command line is where it is taken
# apart into the sections each part uses) and the parsed arguments; returns the exit status.
Handler: TypeAlias = Callable[[Settings, argparse.Namespace], int]
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

# --config is accepted anywhere on the command line: every parser, the top one and each
# command's and subcommand's, has it as a parent.  SUPPRESS: a parser whose part of the
# line has none leaves it unset, instead of overwriting the one given before it.
COMMON = argparse.ArgumentParser(add_help=False)
COMMON.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                    help="TOML configuration file (default: $UPSERT_CONFIG, else built-in)")


def add_command(commands: Commands, name: str, handler: Handler | None = None, *,
                about: str) -> argparse.ArgumentParser:
    """The parser of a command (or subcommand) ``name``, listed with ``about``, knowing
    --config, dispatching to ``handler`` (None for a group: its subcommands have them)."""
    parser = commands.add_parser(name, parents=[COMMON], help=about)
    if handler is not None:
        parser.set_defaults(handler=handler)
    return parser


def add_group(commands: Commands, name: str, *, about: str) -> Commands:
    """A command of subcommands (``dlq list``, ``dlq show`` ...): the parser to add them to;
    the chosen one is ``args.<name>_command``."""
    group = add_command(commands, name, about=about)
    return group.add_subparsers(dest=f"{name}_command", required=True)


def masked(settings: Settings, text: object) -> str:
    """``text`` with the configuration's secrets shown as ***."""
    return redact(str(text), secrets_of(settings))


def serve_until_stopped(name: str, serve: Callable[[], object],
                        refused: type[Exception]) -> int:
    """Run an HTTP server until SIGTERM/SIGINT; exit 2 when it refuses to start (``refused``
    says why: unauthenticated beyond loopback, say)."""
    try:
        serve()
    except refused as e:
        print(f"upsert-worker {name}: refusing to start: {e}", file=sys.stderr)
        return 2
    return 0
