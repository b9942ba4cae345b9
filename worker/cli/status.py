"""``status [--json]``: per worker queue, ready, unacknowledged and consumer counts; dead
letters by error status."""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

from worker.cli.common import Commands, add_command
from worker.cli.output import print_json, table
from worker.settings import Settings

if TYPE_CHECKING:
    from worker.amqp.queue_status import Status


def register(commands: Commands) -> None:
    status = add_command(commands, "status", cmd_status,
                         about="queue depths and consumers; dead letters by status")
    status.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from worker.amqp.queue_status import broker_status

    status = asyncio.run(broker_status(settings.amqp, settings.retry, settings.limits))
    if args.json:
        print_json(status.as_json())
    else:
        print_status(status)
    return 0


def print_status(status: Status) -> None:
    print(table(("QUEUE", "READY", "UNACKED", "CONSUMERS"), (
        (q.name, q.ready, "?" if q.exists and q.unacknowledged is None else q.unacknowledged,
         q.consumers) if q.exists else (q.name + " (missing)", None, None, None)
        for q in status.queues)))
    print(f"\nunacknowledged counts: {status.unacknowledged_source}")
    dead = status.dead_letters_by_status
    total = sum(dead.values())
    print(f"dead letters: {total}" + (" (by error status: " + ", ".join(
        f"{k}: {v}" for k, v in dead.items()) + ")" if dead else ""))
