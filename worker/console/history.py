"""Recorded replies, as the console shows them: a message id looked up in each configured
database (or the one asked for) by ``worker.store.history.search_databases``."""

from __future__ import annotations

from typing import Any

from worker.redaction import redact
from worker.settings import Settings
from worker.store.history import RecordedMessage, search_databases


def shown(record: RecordedMessage) -> dict[str, Any]:
    """One recorded message: where, when, whose, and its reply's items."""
    body = record.body
    return {"database": record.database or "", "message_id": record.message_id,
            "producer": record.producer, "path": record.path or "",
            "activity_id": record.activity_id or "", "status": record.status,
            "processed_at": record.processed_at.isoformat(), "items": record.items,
            "error": body.get("error")}


async def lookup(settings: Settings, message_id: str, producer: str | None,
                 database: str | None, secrets: tuple[str, ...] = ()
                 ) -> tuple[list[dict[str, Any]], list[str]]:
    """The recorded replies of ``message_id``, and the databases that could not be asked
    (with the driver's reason, its secrets masked)."""
    if database and database not in settings.databases:
        return [], [f"{database}: not configured"]
    names = [database] if database else sorted(settings.databases)
    search = await search_databases(settings, names, message_id, producer)
    failed = [f"{name}: {redact(why, secrets)}" for name, why in search.failed.items()]
    return [shown(record) for record in search.found], failed
