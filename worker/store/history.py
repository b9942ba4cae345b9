"""The processed-message records read back for people: which batches with a given
message_id a database holds, and what each was answered (``upsert-worker messages show``,
the console).

A record is keyed by (producer, message_id).  Looking one up by message_id alone must not
read the whole table (it holds ``worker.processed_retention_days`` of batches): the
producers are few, so the query walks the primary key's distinct producers (a loose index
scan, one index probe each) and probes (producer, message_id) for each.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from schemas.ddl import PROCESSED_TABLE
from worker.settings import Settings
from worker.store.catalog import CONNECT_TIMEOUT_S

_COLUMNS = "producer, message_id, path, activity_id, status, reply, processed_at"
# args: producer, message_id
_ONE = f"SELECT {_COLUMNS} FROM {PROCESSED_TABLE} WHERE producer = $1 AND message_id = $2"
# args: message_id.  Each producer found by the index, from the smallest up.
_EVERY_PRODUCER = f"""
WITH RECURSIVE producers(producer) AS (
    (SELECT producer FROM {PROCESSED_TABLE} ORDER BY producer LIMIT 1)
    UNION ALL
    SELECT (SELECT t.producer FROM {PROCESSED_TABLE} t WHERE t.producer > p.producer
            ORDER BY t.producer LIMIT 1)
    FROM producers p WHERE p.producer IS NOT NULL
)
SELECT {_COLUMNS} FROM {PROCESSED_TABLE}
WHERE message_id = $1 AND producer IN (SELECT producer FROM producers
                                       WHERE producer IS NOT NULL)
ORDER BY processed_at, producer
"""


@dataclass(frozen=True)
class RecordedMessage:
    """One processed batch as recorded with its writes."""

    # The verified user_id that sent it; '' for a batch without one.
    producer: str
    message_id: str
    # The batch's path header; None in records older than schema migration 2.
    path: str | None
    activity_id: str | None
    # 207, as every recorded reply is.
    status: int
    # The reply as sent, byte for byte.
    reply: bytes
    processed_at: dt.datetime
    # The configured database it was found in; set by whoever knows (find_recorded).
    database: str | None = None

    @property
    def body(self) -> dict[str, Any]:
        """The reply parsed: ``data`` (each item's id, status and body), ``error``,
        ``debug``."""
        parsed: dict[str, Any] = orjson.loads(self.reply)
        return parsed

    @property
    def items(self) -> list[dict[str, Any]]:
        """Each item's answer, in request order: ``id``, ``status``, ``body``."""
        return list(self.body.get("data") or [])

    def in_database(self, name: str) -> RecordedMessage:
        return dataclasses.replace(self, database=name)

    def as_json(self) -> dict[str, Any]:
        """Everything, the reply parsed (``messages show --json``)."""
        return {"database": self.database, "producer": self.producer,
                "message_id": self.message_id, "path": self.path,
                "activity_id": self.activity_id, "status": self.status,
                "processed_at": self.processed_at.isoformat(), "reply": self.body}


async def recorded_messages(pool_or_conn: asyncpg.Pool | asyncpg.Connection, message_id: str,
                            producer: str | None = None) -> list[RecordedMessage]:
    """The records of batches with ``message_id``: of ``producer`` only (at most one; ''
    is the producer of batches without a user_id), else of every producer, oldest first.

    An empty list when there is none, also when the database has no record table yet
    (never migrated).  Database errors other than that are raised as they are.
    """
    try:
        if producer is not None:
            rows = await pool_or_conn.fetch(_ONE, producer, message_id)
        else:
            rows = await pool_or_conn.fetch(_EVERY_PRODUCER, message_id)
    except asyncpg.UndefinedTableError:
        return []
    return [RecordedMessage(producer=r["producer"], message_id=r["message_id"],
                            path=r["path"], activity_id=r["activity_id"],
                            status=r["status"], reply=bytes(r["reply"]),
                            processed_at=r["processed_at"]) for r in rows]


@dataclass
class Search:
    """What :func:`search_databases` found: the records, each with its database, and the
    databases that could not be read, with why (a driver's message: mask its secrets
    before showing it)."""

    found: list[RecordedMessage] = dataclasses.field(default_factory=list)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)


async def search_databases(settings: Settings, names: list[str], message_id: str,
                           producer: str | None = None) -> Search:
    """:func:`recorded_messages` in each of the configured databases ``names``, one short
    connection each, in order; a database that is down is noted in ``failed``, not fatal."""
    search = Search()
    for name in names:
        try:
            conn = await asyncpg.connect(settings.databases[name].dsn.get_secret_value(),
                                         timeout=CONNECT_TIMEOUT_S)
        except Exception as e:
            search.failed[name] = f"{type(e).__name__}: {e}"
            continue
        try:
            records = await recorded_messages(conn, message_id, producer)
        except Exception as e:
            search.failed[name] = f"{type(e).__name__}: {e}"
            continue
        finally:
            await conn.close()
        search.found += [record.in_database(name) for record in records]
    return search
