"""What a replay would answer now: ``DeadLetterQueue.preview`` (the dry run: nothing is
written) read into, per dead letter, each item's status and body, or why there is none."""

from __future__ import annotations

from typing import Any

from worker.amqp.deadletters import DeadLetterQueue, Selection
from worker.amqp.letters import DeadLetter
from worker.amqp.preview import Preview


def outcome(preview: Preview) -> dict[str, Any]:
    """One dead letter's preview: the reply's status, items (status, body) and
    whole-message error, or that no reply came in time, or why none could."""
    reply = preview.reply or {}
    data = reply.get("data")
    return {"id": preview.letter.id, "database": preview.letter.database or "",
            "path": preview.letter.path or "", "status": preview.status,
            "timeout": preview.timed_out, "failed": preview.error,
            "items": data if isinstance(data, list) else [], "error": reply.get("error")}


async def preview(queue: DeadLetterQueue, letters: list[DeadLetter],
                  timeout_s: float) -> list[dict[str, Any]]:
    """Each chosen dead letter, in queue order, with what it would be answered now."""
    if not letters:
        return []
    previews = await queue.preview(Selection(ids=[d.id for d in letters]),
                                   timeout_s=timeout_s)
    return [outcome(p) for p in previews]
