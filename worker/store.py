"""PostgreSQL: one pool per database, and the writing of a validated batch.

A batch is written in one transaction and a fixed number of round trips whatever its size:
missing parents are found in one query, all rows are upserted in one statement, and the
reply is recorded under the batch's message_id in the same transaction, so a redelivery
is answered from that record and writes nothing.

When the bulk statement hits an error validation could not foresee (a parent deleted in
between, a value the database refuses), the transaction is redone with the rows split in
halves under savepoints, so only the offending items fail: about k*log2(n) extra
statements for k bad items among n, and nothing extra on the happy path.

Rows are written in key order (see :func:`group_by_key`), so concurrent batches lock rows
in one global order and do not deadlock each other.  Should the database still report a
deadlock or a serialization failure (another writer, a trigger), the transaction is
retried in place a few times, with a short jittered pause, before the batch goes the slow
way through the delay queues.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from schemas.entity import ENTRY_DATE, ENTRY_USER
from worker import errors
from worker import metrics as m
from worker.batch import Batch
from worker.logs import get_logger
from worker.settings import Settings
from worker.statements import (
    PROCESSED_EXPIRE,
    PROCESSED_LOOKUP,
    PROCESSED_RECORD,
    EntityStatements,
    statements_for,
)

log = get_logger("worker.store")

Key = tuple[Any, ...]

# In-place tries of a transaction that hit a deadlock or serialization failure, and the
# first pause between them (doubled each time, fully jittered so the two sides of a
# deadlock do not meet again in step).
CONFLICT_ATTEMPTS = 4
CONFLICT_BACKOFF_S = 0.05
# Processed message ids are forgotten this many at a time: short transactions that never
# hold many row locks, so the cleanup does not get in the way of the writes.
EXPIRE_CHUNK_ROWS = 5000


@dataclass(slots=True)
class KeyGroup:
    """All valid items of one key, in request order, and the row that is written for them."""

    key: Key
    indexes: list[int]
    row: dict[str, Any]


@dataclass(frozen=True)
class StoredReply:
    status: int
    body: bytes
    # True when the batch had been processed before and this is the recorded reply.
    replayed: bool


class _IsolateItems(Exception):
    """The bulk statement failed for some item: redo the transaction item-isolating."""


class _AlreadyProcessed(Exception):
    """Another delivery of the same message_id committed first."""


class Databases:
    """One asyncpg pool per configured database, opened on first use."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pools: dict[str, asyncpg.Pool] = {}
        self._opening: dict[str, asyncio.Lock] = {}

    async def pool(self, name: str) -> asyncpg.Pool:
        pool = self._pools.get(name)
        if pool is not None:
            return pool
        lock = self._opening.setdefault(name, asyncio.Lock())
        async with lock:
            pool = self._pools.get(name)
            if pool is None:
                db = self._settings.databases[name]
                try:
                    pool = await asyncpg.create_pool(
                        db.dsn.get_secret_value(), min_size=db.pool_min_size,
                        max_size=db.pool_max_size, command_timeout=db.command_timeout_s,
                        reset=_reset_connection)
                except Exception as e:
                    raise (errors.classify_database_error(e) or e) from e
                self._pools[name] = pool
            return pool

    @property
    def open_names(self) -> list[str]:
        return list(self._pools)

    async def ping(self, name: str) -> bool:
        """Whether the database answers now (for readiness)."""
        try:
            pool = await self.pool(name)
            async with pool.acquire(timeout=5) as conn:
                await conn.fetchval("SELECT 1", timeout=5)
            return True
        except Exception:
            return False

    async def expire_processed(self, retention_days: float) -> int:
        """Forget processed message ids older than the retention, in every open database;
        returns how many were forgotten."""
        forgotten = 0
        for pool in list(self._pools.values()):
            forgotten += await expire_processed(pool, retention_days)
        return forgotten

    async def close(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        await asyncio.gather(*(p.close() for p in pools), return_exceptions=True)


async def _reset_connection(conn: asyncpg.Connection) -> None:
    """What a connection needs before it goes back to the pool.

    asyncpg's default reset (unlock advisory locks, close cursors, unlisten, reset settings)
    costs a round trip per batch, and the worker leaves none of that behind: its sessions
    run plain statements in managed transactions.  A transaction left open (a batch
    cancelled mid-write at shutdown) is still rolled back here.
    """
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def expire_processed(pool: asyncpg.Pool, retention_days: float) -> int:
    """Delete processed message ids older than the retention, in short chunks."""
    forgotten = 0
    while True:
        status = await pool.execute(PROCESSED_EXPIRE, dt.timedelta(days=retention_days),
                                    EXPIRE_CHUNK_ROWS)
        deleted = int(status.split()[-1])
        forgotten += deleted
        if deleted < EXPIRE_CHUNK_ROWS:
            return forgotten


async def commit_batch(pool: asyncpg.Pool, batch: Batch,
                       render: Callable[[Batch], tuple[int, bytes]], *,
                       conflict_attempts: int = CONFLICT_ATTEMPTS) -> StoredReply:
    """Write the batch and record its reply, exactly once per message_id.

    ``render`` turns the answered batch into (status, reply bytes) inside the transaction,
    so the recorded reply is the one sent.  A deadlock or serialization failure is retried
    here up to ``conflict_attempts`` times in all; transient database failures are raised
    as :class:`~worker.errors.TransientFailure`.
    """
    try:
        async with pool.acquire() as conn:
            attempt = 1
            while True:
                try:
                    return await _commit_once(conn, batch, render)
                except Exception as e:
                    if not errors.is_conflict(e) or attempt >= conflict_attempts:
                        raise
                    sqlstate = getattr(e, "sqlstate", "")
                    m.DATABASE_CONFLICTS.labels(sqlstate=sqlstate).inc()
                    log.info("database conflict; retrying in place", sqlstate=sqlstate,
                             attempt=attempt)
                    # Rolled back: forget its answers and try again once the other
                    # transaction has had a moment to finish.
                    _reset_answers(batch)
                    await asyncio.sleep(random.uniform(0, CONFLICT_BACKOFF_S * 2 ** attempt))
                    attempt += 1
    except Exception as e:
        transient = errors.classify_database_error(e)
        if transient is not None:
            raise transient from e
        raise


async def _commit_once(conn: asyncpg.Connection, batch: Batch,
                       render: Callable[[Batch], tuple[int, bytes]]) -> StoredReply:
    """One try: answer from the record, else write in one transaction (twice if an item
    error has to be isolated)."""
    if batch.message_id is not None and not batch.first_delivery:
        # The primary key alone: a redelivery costs one index lookup.  A first delivery
        # skips it: should its id be recorded after all (a producer sent it twice), the
        # record's insert conflicts below and the answer comes from the record then.
        stored = await conn.fetchrow(PROCESSED_LOOKUP, batch.message_id)
        if stored is not None:
            return StoredReply(stored["status"], bytes(stored["reply"]), True)
    try:
        try:
            return await _commit(conn, batch, render, isolate=False)
        except _IsolateItems:
            _reset_answers(batch)
            return await _commit(conn, batch, render, isolate=True)
    except _AlreadyProcessed:
        stored = await conn.fetchrow(PROCESSED_LOOKUP, batch.message_id)
        return StoredReply(stored["status"], bytes(stored["reply"]), True)


async def _commit(conn: asyncpg.Connection, batch: Batch,
                  render: Callable[[Batch], tuple[int, bytes]], *, isolate: bool) -> StoredReply:
    async with conn.transaction():
        await write_rows(conn, batch, isolate=isolate)
        status, body = render(batch)
        if batch.message_id is not None:
            recorded = await conn.fetchval(PROCESSED_RECORD, batch.message_id, status, body)
            if recorded is None:
                raise _AlreadyProcessed
    return StoredReply(status, body, False)


def _reset_answers(batch: Batch) -> None:
    """Forget the database's answers of a rolled-back attempt (404/409/201/200)."""
    valid = {index for index, _ in batch.rows}
    for index in valid:
        batch.outcomes[index] = None


async def write_rows(conn: asyncpg.Connection, batch: Batch, *, isolate: bool) -> None:
    """Answer every valid item of the batch: 201, 200, 404, 409, or an isolated error."""
    statements = statements_for(batch.entity)
    rows = await _without_missing_parents(conn, batch, statements)
    groups = group_by_key(batch, rows)
    if not groups:
        return
    if isolate:
        # The bulk statement failed a moment ago: start by splitting, not by retrying it.
        await _bisect(conn, batch, statements, groups, known_bad=True)
        return
    try:
        returned = await _upsert(conn, batch, statements, groups)
    except Exception as e:
        if not errors.is_item_error(e):
            raise
        raise _IsolateItems from e
    answer_groups(batch, groups, returned)


Row = tuple[int, dict[str, Any]]


async def _without_missing_parents(conn: asyncpg.Connection, batch: Batch,
                                   statements: EntityStatements) -> list[Row]:
    """Answer 404 for items whose parent record is missing; return the others."""
    missing = await missing_parents(conn, statements, [batch])
    return answer_missing_parents(batch, statements, missing)


async def missing_parents(conn: asyncpg.Connection, statements: EntityStatements,
                          batches: Sequence[Batch]) -> list[set[Key]]:
    """Per parent of the entity, the parent keys the batches' rows point at that have no
    parent record: one query per parent the rows point at."""
    found: list[set[Key]] = []
    for check in statements.parent_checks:
        fields = check.parent.fields
        wanted = {tuple(map(row.get, fields)) for batch in batches for _, row in batch.rows}
        wanted = {k for k in wanted if None not in k}
        if not wanted:
            found.append(set())
            continue
        columns = list(zip(*wanted, strict=True))
        found.append({tuple(r) for r in await conn.fetch(check.statement, *columns)})
    return found


def answer_missing_parents(batch: Batch, statements: EntityStatements,
                           missing: list[set[Key]]) -> list[Row]:
    """Answer 404 for the batch's items whose parent key is ``missing``; return the others."""
    if not any(missing):
        return batch.rows
    kept = []
    for index, row in batch.rows:
        problems = []
        for check, keys in zip(statements.parent_checks, missing, strict=True):
            fields = check.parent.fields
            key = tuple(map(row.get, fields))
            if key in keys:
                shown = ", ".join(f"{f}={_show(v)}" for f, v in zip(fields, key, strict=True))
                problems.append(f"parent {check.parent.table} not found: {shown}")
        if problems:
            batch.answer(index, 404, "; ".join(problems))
        else:
            kept.append((index, row))
    return kept


def _show(value: Any) -> str:
    if hasattr(value, "isoformat"):
        return f"'{value.isoformat()}'"
    return repr(value)


def group_by_key(batch: Batch, rows: Sequence[tuple[int, dict[str, Any]]]) -> list[KeyGroup]:
    """Items of one key collapse into one row: the last item's values, as applying them one
    by one would leave, but the first item's entry_* fields, which an update never changes.
    Groups come sorted by key, so concurrent batches lock rows in one global order."""
    key_fields = batch.entity.key
    if len(key_fields) == 1:
        (name,) = key_fields
        keys = [(row[name],) for _, row in rows]
    else:
        keys = [tuple(map(row.__getitem__, key_fields)) for _, row in rows]
    if len(set(keys)) == len(keys):  # the usual batch: no key twice, a group per item
        order = sorted(range(len(keys)), key=keys.__getitem__)
        return [KeyGroup(keys[i], [rows[i][0]], rows[i][1]) for i in order]
    groups: dict[Key, KeyGroup] = {}
    for index, row in rows:
        key = tuple(map(row.__getitem__, key_fields))  # per item: the cheapest spelling
        group = groups.get(key)
        if group is None:
            groups[key] = KeyGroup(key, [index], row)
        else:
            first = group.row
            group.indexes.append(index)
            group.row = {**row, ENTRY_DATE: first.get(ENTRY_DATE),
                         ENTRY_USER: first.get(ENTRY_USER)}
    return [groups[k] for k in sorted(groups)]


async def _upsert(conn: asyncpg.Connection, batch: Batch, statements: EntityStatements,
                  groups: Sequence[KeyGroup]) -> dict[Key, bool]:
    """One INSERT ... ON CONFLICT for all groups: key -> inserted, for rows it wrote."""
    return await upsert_json(conn, statements.upsert, [g.row for g in groups],
                             batch.user_id, batch.source_ts, batch.message_id)


async def upsert_json(conn: asyncpg.Connection, statement: str, rows: list[dict[str, Any]],
                      *args: Any) -> dict[Key, bool]:
    """Run an upsert statement over ``rows`` sent as one JSON array: key -> inserted."""
    try:
        text = orjson.dumps(rows).decode()
    except orjson.JSONEncodeError as e:  # e.g. a lone surrogate: the item's own fault
        raise asyncpg.DataError(f"invalid value: {e}") from e
    records = await conn.fetch(statement, text, *args)
    return {tuple(r)[:-1]: r["inserted"] for r in records}


def answer_groups(batch: Batch, groups: Sequence[KeyGroup],
                  returned: dict[Key, bool]) -> None:
    """201/200 for the items of the groups the upsert wrote, 409 for the others."""
    for group in groups:
        inserted = returned.get(group.key)
        if inserted is None:
            for index in group.indexes:
                batch.answer(index, 409, "not applied: the stored record was written by a "
                                         "newer batch")
            continue
        first, *rest = group.indexes
        if inserted:
            batch.answer(first, 201, "Created")
        else:
            batch.answer(first, 200, "Updated")
        for index in rest:
            batch.answer(index, 200, "Updated")


async def _bisect(conn: asyncpg.Connection, batch: Batch, statements: EntityStatements,
                  groups: Sequence[KeyGroup], *, known_bad: bool = False) -> bool:
    """Upsert under a savepoint; on an item error, split in halves until it is isolated.

    Returns whether ``groups`` went in with one statement.  ``known_bad`` says a statement
    over these very groups just failed, so they are split without trying them again; and
    when the left half then goes in whole, the right half must hold the bad item and is
    split at once too.  Isolating one bad item among n thus costs about log2(n) statements.
    (Should the failure have gone away meanwhile, nothing is lost: every item is still
    written by some statement, or answered alone.)
    """
    if not (known_bad and len(groups) > 1):
        try:
            async with conn.transaction():
                returned = await _upsert(conn, batch, statements, groups)
        except Exception as e:
            if not errors.is_item_error(e):
                raise
            if len(groups) == 1:
                status, body = await item_answer(conn, batch, e)
                for index in groups[0].indexes:
                    batch.answer(index, status, body)
                return False
        else:
            answer_groups(batch, groups, returned)
            return True
    middle = len(groups) // 2
    left_whole = await _bisect(conn, batch, statements, groups[:middle])
    await _bisect(conn, batch, statements, groups[middle:], known_bad=left_whole)
    return False


async def item_answer(conn: asyncpg.Connection, batch: Batch,
                      exc: BaseException) -> tuple[int, str]:
    """The answer for one item the database refused, naming its fields where it can."""
    names = []
    column = getattr(exc, "column_name", None)
    constraint = getattr(exc, "constraint_name", None)
    if column:
        names = [column]
    elif constraint and getattr(exc, "sqlstate", None) == "23514":
        # A CHECK constraint names no column; the catalog knows which ones it reads.
        names = [r[0] for r in await conn.fetch(
            "SELECT a.attname FROM pg_constraint c JOIN pg_attribute a "
            "ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey) "
            "WHERE c.conname = $1 AND c.conrelid = to_regclass($2) ORDER BY a.attnum",
            constraint, f"{getattr(exc, 'schema_name', '')}.{getattr(exc, 'table_name', '')}")]
    by_column = {f.column: f.name for f in batch.entity.fields}
    return item_error(exc, [by_column.get(n, n) for n in names])


def item_error(exc: BaseException, fields: Sequence[str] = ()) -> tuple[int, str]:
    """The answer for one item the database refused; ``fields`` are the JSON names of the
    columns the error concerns, when known."""
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if sqlstate == "23503":
        detail = getattr(exc, "detail", None) or str(exc)
        return 404, f"parent record not found: {detail}"
    if sqlstate[:2] in ("22", "23") or isinstance(exc, ValueError):
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        named = ", ".join(fields) or getattr(exc, "constraint_name", None)
        return 400, f"{named}: {message}" if named else message
    return 500, f"unexpected failure: {type(exc).__name__}"
