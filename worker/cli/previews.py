"""What ``dlq replay --preview`` prints: per dead letter, what a dry run of it was
answered now (each item's status and body, or the whole-message problem), or that no
answer came in time."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from worker.cli.output import print_json, table

if TYPE_CHECKING:
    from worker.amqp.deadletters import Selection
    from worker.amqp.preview import Preview


def print_previews(previews: Sequence[Preview], selection: Selection, as_json: bool) -> int:
    """Print them; exit status 1 when an id was not found or a preview got no answer."""
    missing = [i for i in dict.fromkeys(selection.ids)
               if i not in {p.letter.id for p in previews}]
    if as_json:
        print_json([p.as_json() for p in previews])
    else:
        for preview in previews:
            print(describe(preview))
        answered = sum(p.reply is not None for p in previews)
        print(f"previewed {answered}/{len(previews)} (dry run: nothing removed, written or "
              f"recorded)")
    for letter_id in missing:
        print(f"upsert-worker: no dead letter {letter_id}", file=sys.stderr)
    unanswered = [p for p in previews if p.reply is None]
    for preview in unanswered:
        why = preview.error or "no answer in time (is a worker running?)"
        print(f"upsert-worker: {preview.letter.id}: {why}", file=sys.stderr)
    return 1 if missing or unanswered else 0


def describe(preview: Preview) -> str:
    letter = preview.letter
    head = f"{letter.id} ({letter.database} {letter.path}): "
    reply = preview.reply
    if reply is None:
        return head + ("not previewed" if preview.error else "no answer")
    problem = reply.get("error")
    if isinstance(problem, dict):
        return head + (f"would be refused {problem.get('status')} {problem.get('title')}: "
                       f"{problem.get('detail')}")
    items = reply.get("data") or []
    rows = ((i, item.get("status"), _key(item.get("id")), item.get("body"))
            for i, item in enumerate(items))
    return head + f"would be answered {preview.status}\n" + _indent(
        table(("ITEM", "STATUS", "ID", "BODY"), rows))


def _key(ids: Any) -> str:
    if not isinstance(ids, list):
        return "-"
    return ", ".join(f"{i.get('key')}={i.get('value')}" for i in ids if isinstance(i, dict))


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
