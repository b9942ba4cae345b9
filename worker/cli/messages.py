"""``messages show ID [--database D] [--producer P] [--json]``: a processed batch's recorded
reply, read from the processed-message records (worker/store/history.py).

An operator's tool: without ``--producer`` it shows every producer's record with that id,
and without ``--database`` it looks in every configured database.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, Any

from worker.cli.common import Commands, add_command, add_group, masked
from worker.cli.output import print_json, table
from worker.settings import Settings

if TYPE_CHECKING:
    from worker.store.history import RecordedMessage


def register(commands: Commands) -> None:
    subcommands = add_group(commands, "messages", about="processed batches: their recorded replies")
    show = add_command(subcommands, "show", cmd_messages_show,
                       about="a processed batch's recorded reply, by message id")
    show.add_argument("id", metavar="ID", help="the batch's message_id")
    show.add_argument("--database", metavar="NAME",
                      help="only this configured database (default: every one)")
    show.add_argument("--producer", metavar="USER",
                      help="only this producer's record ('' for batches without user_id; "
                           "default: every producer's)")
    show.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_messages_show(settings: Settings, args: argparse.Namespace) -> int:
    from worker.store.history import search_databases

    names = [args.database] if args.database else list(settings.databases)
    if args.database and args.database not in settings.databases:
        print(f"upsert-worker: database not configured: {args.database}", file=sys.stderr)
        return 2
    search = asyncio.run(search_databases(settings, names, args.id, args.producer))
    for name, error in search.failed.items():
        print(f"upsert-worker: {name}: not read: {masked(settings, error)}", file=sys.stderr)
    if args.json:
        print_json([record.as_json() for record in search.found])
    else:
        for n, record in enumerate(search.found):
            print(("\n" if n else "") + describe(record))
    if not search.found:
        whose = f" of producer '{args.producer}'" if args.producer is not None else ""
        print(f"upsert-worker: no record of message id {args.id}{whose} in "
              f"{', '.join(names)}", file=sys.stderr)
        return 1
    return 1 if search.failed else 0


def describe(record: RecordedMessage) -> str:
    """The record for people: where and when, then one line per item."""
    head = [
        f"message id:    {record.message_id}",
        f"producer:      {record.producer or '(none: no user_id)'}",
        f"database:      {record.database}",
        f"path:          {record.path or '-'}",
        f"processed at:  {record.processed_at.isoformat()}",
        f"activity id:   {record.activity_id or '-'}",
        f"status:        {record.status}",
    ]
    items = record.items
    rows = ((i, item.get("status"), _key(item.get("id")), item.get("body"))
            for i, item in enumerate(items))
    head.append(f"items:         {len(items)}")
    return "\n".join(head) + ("\n" + table(("ITEM", "STATUS", "ID", "BODY"), rows)
                              if items else "")


def _key(ids: Any) -> str:
    if not isinstance(ids, list):
        return "-"
    return ", ".join(f"{i.get('key')}={i.get('value')}" for i in ids if isinstance(i, dict))
