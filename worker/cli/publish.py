"""``publish --database NAME --path PATH FILE``: one batch as a producer sends it, and its
reply (the sending is worker/cli/publishing.py's)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from worker.cli.common import Commands, add_command, masked
from worker.settings import Settings


def register(commands: Commands) -> None:
    publish = add_command(commands, "publish", cmd_publish,
                          about="publish a JSON array as a batch and print the reply")
    publish.add_argument("--database", required=True, metavar="NAME")
    publish.add_argument("--path", required=True, metavar="PATH")
    publish.add_argument("--user-id", metavar="U")
    publish.add_argument("--message-id", metavar="ID")
    publish.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                         help="how long to wait for the reply (default 60)")
    publish.add_argument("file", metavar="FILE", help="JSON array file, or - for stdin")


def cmd_publish(settings: Settings, args: argparse.Namespace) -> int:
    from worker.cli.publishing import format_reply, publish_batch

    body = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    try:
        reply = asyncio.run(publish_batch(
            settings.amqp, settings.retry, path=args.path, body=body, timeout_s=args.timeout,
            database=args.database, user_id=args.user_id, message_id=args.message_id))
    except TimeoutError:
        print(f"upsert-worker: no reply within {args.timeout:g} s (is a worker running?)",
              file=sys.stderr)
        return 3
    except Exception as e:
        print(f"upsert-worker: publish failed: {masked(settings, e)}", file=sys.stderr)
        return 2
    print(format_reply(reply.body))
    return 0 if reply.status == 207 else 1
