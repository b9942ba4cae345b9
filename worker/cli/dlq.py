"""``dlq list|show|replay|purge``: the dead letters of ``vbapi.dead``, never lost or
reordered (worker/amqp/deadletters.py holds the queue while a command runs)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

from worker.cli.common import Commands, add_command, add_group
from worker.cli.output import print_json, progress, table
from worker.settings import Settings

if TYPE_CHECKING:
    from worker.amqp.deadletters import CommandResult, DeadLetterQueue
    from worker.amqp.letters import DeadLetter


def register(commands: Commands) -> None:
    subcommands = add_group(commands, "dlq",
                            about="list, show, replay or purge dead-lettered batches")
    listing = add_command(subcommands, "list", cmd_dlq_list,
                          about="every dead letter, in queue order")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    show = add_command(subcommands, "show", cmd_dlq_show,
                       about="one dead letter: headers, properties, body")
    show.add_argument("id", metavar="ID")
    replay = add_command(subcommands, "replay", cmd_dlq_replay,
                         about="republish to vbapi; remove once confirmed")
    _add_selection(replay, with_status=True)
    how = replay.add_mutually_exclusive_group()
    how.add_argument("--dry-run", action="store_true",
                     help="list what would be replayed, change nothing")
    how.add_argument("--preview", action="store_true",
                     help="what each would be answered now (a dry run by the workers); "
                          "nothing removed, written or recorded")
    replay.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                        help="with --preview: how long to wait for the answers (default 30)")
    replay.add_argument("--json", action="store_true",
                        help="with --preview: machine-readable output")
    purge = add_command(subcommands, "purge", cmd_dlq_purge, about="delete dead letters")
    _add_selection(purge, with_status=False)
    purge.add_argument("--yes", action="store_true", help="really delete them")


def _add_selection(parser: argparse.ArgumentParser, *, with_status: bool) -> None:
    chosen = parser.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--all", action="store_true", help="every dead letter")
    chosen.add_argument("--id", nargs="+", action="extend", metavar="ID",
                        help="these dead letters (ids from `dlq list`)")
    if with_status:
        chosen.add_argument("--status", type=int, metavar="N",
                            help="those dead-lettered with error status N")


def _queue(settings: Settings) -> DeadLetterQueue:
    from worker.amqp.deadletters import DeadLetterQueue

    return DeadLetterQueue(settings.amqp, settings.limits, settings.retry, progress=progress)


def cmd_dlq_list(settings: Settings, args: argparse.Namespace) -> int:
    letters = asyncio.run(_queue(settings).letters())
    if args.json:
        print_json([d.row() for d in letters])
        return 0
    if letters:
        print(_letter_rows(letters))
    print(f"{len(letters)} dead letter{'s' if len(letters) != 1 else ''}")
    return 0


def cmd_dlq_show(settings: Settings, args: argparse.Namespace) -> int:
    letters = asyncio.run(_queue(settings).letters())
    found = [d for d in letters if d.id == args.id]
    if not found:
        print(f"upsert-worker: no dead letter {args.id}", file=sys.stderr)
        return 1
    print_json(found[0].details(settings.limits))
    return 0


def cmd_dlq_replay(settings: Settings, args: argparse.Namespace) -> int:
    from worker.amqp.deadletters import Selection

    selection = Selection(all_=args.all, ids=args.id or [], status=args.status)
    if args.preview:
        from worker.cli.previews import print_previews

        previews = asyncio.run(_queue(settings).preview(selection, timeout_s=args.timeout))
        return print_previews(previews, selection, args.json)
    outcome = asyncio.run(_queue(settings).replay(selection, dry_run=args.dry_run))
    if args.dry_run:
        if outcome.done:
            print(_letter_rows(outcome.done))
        print(f"would replay {len(outcome.done)} (dry run: nothing changed)")
    else:
        for letter in outcome.done:
            print(f"replayed {letter.id} ({letter.database} {letter.path}, "
                  f"message id {letter.properties.get('message_id', '-')})")
        print(f"replayed {len(outcome.done)}, failed {len(outcome.failed)}")
    return _report(outcome, "replayed")


def cmd_dlq_purge(settings: Settings, args: argparse.Namespace) -> int:
    from worker.amqp.deadletters import Selection

    if not args.yes:
        print("upsert-worker: purge deletes dead letters for good; add --yes to confirm",
              file=sys.stderr)
        return 2
    outcome = asyncio.run(_queue(settings).purge(Selection(all_=args.all, ids=args.id or [])))
    for letter in outcome.done:
        print(f"purged {letter.id} ({letter.database} {letter.path})")
    print(f"purged {len(outcome.done)}")
    return _report(outcome, "purged")


def _letter_rows(letters: Iterable[DeadLetter]) -> str:
    return table(
        ("ID", "DATABASE", "PATH", "ENTITY", "ITEMS", "STATUS", "TITLE", "ATTEMPTS",
         "DEAD-LETTERED AT"),
        ((d.id, d.database, d.path, d.entity, d.item_count, d.error_status, d.error_title,
          d.attempts, d.dead_lettered_at) for d in letters))


def _report(outcome: CommandResult, verb: str) -> int:
    for missing in outcome.missing:
        print(f"upsert-worker: no dead letter {missing}", file=sys.stderr)
    for letter_id, error in outcome.failed.items():
        print(f"upsert-worker: {letter_id}: not {verb}: {error}", file=sys.stderr)
    return 1 if outcome.missing or outcome.failed else 0
