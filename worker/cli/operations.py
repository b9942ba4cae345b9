"""What the ``status`` and ``dlq`` commands print: tables for people, ``--json`` for
scripts, progress on stderr.  Each function returns the command's exit status."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from worker.amqp import deadletters
from worker.amqp.letters import DeadLetter
from worker.amqp.queue_status import broker_status
from worker.settings import Settings


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, default=str, option=orjson.OPT_INDENT_2).decode()
                     + "\n")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    cells = [[str(h) for h in header]] + [["-" if v is None else str(v) for v in row]
                                          for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)
                               ).rstrip() for row in cells)


def print_status(settings: Settings, *, as_json: bool) -> int:
    status = asyncio.run(broker_status(settings))
    if as_json:
        _print_json(status.as_json())
        return 0
    print(_table(("QUEUE", "READY", "UNACKED", "CONSUMERS"), (
        (q.name, q.ready, "?" if q.exists and q.unacknowledged is None else q.unacknowledged,
         q.consumers) if q.exists else (q.name + " (missing)", None, None, None)
        for q in status.queues)))
    print(f"\nunacknowledged counts: {status.unacknowledged_source}")
    dead = status.dead_letters_by_status
    total = sum(dead.values())
    print(f"dead letters: {total}" + (" (by error status: " + ", ".join(
        f"{k}: {v}" for k, v in dead.items()) + ")" if dead else ""))
    return 0


def _letter_rows(letters: Iterable[DeadLetter]) -> str:
    return _table(
        ("ID", "DATABASE", "PATH", "ENTITY", "ITEMS", "STATUS", "TITLE", "ATTEMPTS",
         "DEAD-LETTERED AT"),
        ((d.id, d.database, d.path, d.entity, d.item_count, d.error_status, d.error_title,
          d.attempts, d.dead_lettered_at) for d in letters))


def print_dead_letters(settings: Settings, *, as_json: bool) -> int:
    letters = asyncio.run(deadletters.list_dead_letters(settings, _progress))
    if as_json:
        _print_json([d.row() for d in letters])
        return 0
    if letters:
        print(_letter_rows(letters))
    print(f"{len(letters)} dead letter{'s' if len(letters) != 1 else ''}")
    return 0


def print_dead_letter(settings: Settings, letter_id: str) -> int:
    letters = asyncio.run(deadletters.list_dead_letters(settings, _progress))
    found = [d for d in letters if d.id == letter_id]
    if not found:
        print(f"upsert-worker: no dead letter {letter_id}", file=sys.stderr)
        return 1
    _print_json(found[0].details(settings))
    return 0


def _report(outcome: deadletters.CommandResult, verb: str) -> int:
    for missing in outcome.missing:
        print(f"upsert-worker: no dead letter {missing}", file=sys.stderr)
    for letter_id, error in outcome.failed.items():
        print(f"upsert-worker: {letter_id}: not {verb}: {error}", file=sys.stderr)
    return 1 if outcome.missing or outcome.failed else 0


def replay_dead_letters(settings: Settings, *, all_: bool, ids: Sequence[str],
                        status: int | None, dry_run: bool) -> int:
    selection = deadletters.Selection(all_=all_, ids=ids, status=status)
    outcome = asyncio.run(deadletters.replay(settings, selection, dry_run=dry_run,
                                             progress=_progress))
    if dry_run:
        if outcome.done:
            print(_letter_rows(outcome.done))
        print(f"would replay {len(outcome.done)} (dry run: nothing changed)")
    else:
        for letter in outcome.done:
            print(f"replayed {letter.id} ({letter.database} {letter.path}, "
                  f"message id {letter.properties.get('message_id', '-')})")
        print(f"replayed {len(outcome.done)}, failed {len(outcome.failed)}")
    return _report(outcome, "replayed")


def purge_dead_letters(settings: Settings, *, all_: bool, ids: Sequence[str],
                       yes: bool) -> int:
    if not yes:
        print("upsert-worker: purge deletes dead letters for good; add --yes to confirm",
              file=sys.stderr)
        return 2
    outcome = asyncio.run(deadletters.purge(settings, deadletters.Selection(all_=all_, ids=ids),
                                            progress=_progress))
    for letter in outcome.done:
        print(f"purged {letter.id} ({letter.database} {letter.path})")
    print(f"purged {len(outcome.done)}")
    return _report(outcome, "purged")
