"""``migrate [--database NAME]``: create or upgrade schema vbapi."""

from __future__ import annotations

import argparse
import asyncio
import sys

from worker.cli.common import Commands, add_command, masked
from worker.settings import Settings


def register(commands: Commands) -> None:
    migrate = add_command(commands, "migrate", cmd_migrate,
                          about="create or upgrade schema vbapi")
    migrate.add_argument("--database", metavar="NAME",
                         help="only this configured database (default: all)")


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from worker.store.migrations import migrate

    names = [args.database] if args.database else list(settings.databases)
    unknown = [n for n in names if n not in settings.databases]
    if unknown:
        print(f"upsert-worker: database not configured: {', '.join(unknown)}", file=sys.stderr)
        return 2

    async def run() -> int:
        failed = 0
        for name in names:
            try:
                applied = await migrate(settings.databases[name].dsn.get_secret_value())
            except Exception as e:
                print(f"{name}: failed: {masked(settings, e)}", file=sys.stderr)
                failed += 1
                continue
            print(f"{name}: " + ("; ".join(applied) if applied else "up to date"))
        return 1 if failed else 0

    return asyncio.run(run())
