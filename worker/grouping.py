"""Group commit: small batches that wait for a connection share one transaction.

A 1-item batch costs little to validate but a whole transaction to write: BEGIN, its
statements, its record, COMMIT and a flush of the WAL, each a round trip.  Small batches
(:data:`SMALL_BATCH_ROWS`) are therefore written by at most ``group_connections``
transactions at a time (measured: 2 of 8 connections gave a fifth more 1-item batches per
second than 8, see BENCHMARKS.md); those that arrive meanwhile queue here instead of at the
pool, and the next free turn takes all of them (up to ``group_max_batches``, at most
:data:`GROUP_MAX_ROWS` rows) into one transaction:

- batches of one entity that share no key (the usual case) with one parent check, one
  upsert and one insert of their records for all of them: a group of n batches costs
  about five round trips, not three per batch;
- others in arrival order, each with its own statements, so every batch sees the writes
  of the ones before it;
- either way every batch gets the 201/200/404/409 answers it would get alone, in order;
- each with its own rendered reply and its own processed-message record, in the same
  transaction, so exactly-once per message_id holds as for a batch alone;
- anything unusual (a batch seen before, an item error to isolate, a conflict, a lost
  connection) rolls the group back and commits its batches one by one with
  :func:`~worker.store.commit_batch`, each with its own outcome: a failure of one batch
  never fails another.

Nothing waits on a timer: a batch that finds a free turn is written at once, alone.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from schemas.entity import Entity
from worker.batch import Batch
from worker.logs import get_logger
from worker.statements import (
    PROCESSED_ANY,
    PROCESSED_RECORD_MANY,
    ROW_MESSAGE_ID,
    ROW_SOURCE_TS,
    ROW_USER,
    lock_rows_statement,
    statements_for,
)
from worker.store import (
    KeyGroup,
    StoredReply,
    answer_groups,
    answer_missing_parents,
    commit_batch,
    group_by_key,
    missing_parents,
    upsert_json,
    write_rows,
)

log = get_logger("worker.grouping")

Render = Callable[[Batch], tuple[int, bytes]]

# Batches with at most this many valid rows are small: their transaction costs more than
# their rows, so at most ``group_connections`` of them are written at a time and the others
# wait to go in groups.  Larger batches are always written alone, on any free connection.
SMALL_BATCH_ROWS = 100
# The rows of one group at most: a larger group saves nothing worth its larger redo should
# it have to fall back.
GROUP_MAX_ROWS = 1000


class _Ungroup(Exception):
    """The group cannot be committed together: commit its batches one by one."""


@dataclass
class _Waiting:
    batch: Batch
    render: Render
    done: asyncio.Future[StoredReply]


class GroupCommitter:
    """Commits the batches of one database, grouping those that would wait for a connection."""

    def __init__(self, pool: asyncpg.Pool, connections: int, max_batches: int,
                 group_connections: int = 2) -> None:
        self.pool = pool
        self.connections = connections
        self.max_batches = max_batches
        self.group_connections = group_connections
        self._busy = 0        # transactions under way
        self._small_busy = 0  # ... of them for small batches, alone or grouped
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._tasks: set[asyncio.Task[None]] = set()

    def _free(self) -> bool:
        """Whether a small batch (or a group of them) may start a transaction now."""
        return self._busy < self.connections and self._small_busy < self.group_connections

    async def commit(self, batch: Batch, render: Render) -> StoredReply:
        """Like :func:`~worker.store.commit_batch`, and with the same outcome."""
        small = self.max_batches > 1 and len(batch.rows) <= SMALL_BATCH_ROWS
        if not small or (self._free() and not self._waiting):
            self._busy += 1
            self._small_busy += small
            try:
                return await commit_batch(self.pool, batch, render)
            finally:
                self._busy -= 1
                self._small_busy -= small
                self._start_waiting()
        waiting = _Waiting(batch, render, asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        self._start_waiting()
        # Cancelling this (shutdown past its grace) leaves the group to finish or skip it;
        # either way the request is handed back and a redelivery is answered correctly.
        return await waiting.done

    def _start_waiting(self) -> None:
        while self._waiting and self._free():
            group: list[_Waiting] = []
            rows = 0
            while self._waiting and len(group) < self.max_batches:
                head = self._waiting[0]
                if head.done.done():  # its request was cancelled meanwhile
                    self._waiting.popleft()
                    continue
                if group and rows + len(head.batch.rows) > GROUP_MAX_ROWS:
                    break
                group.append(self._waiting.popleft())
                rows += len(head.batch.rows)
            if not group:
                return
            self._busy += 1
            self._small_busy += 1
            task = asyncio.create_task(self._commit_group(group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _commit_group(self, group: list[_Waiting]) -> None:
        try:
            if len(group) > 1:
                try:
                    replies = await commit_together(self.pool, [(w.batch, w.render)
                                                                for w in group])
                except Exception as e:
                    log.debug("group commit fell back to one transaction per batch",
                              batches=len(group), reason=repr(e))
                    for w in group:
                        _forget_database_answers(w.batch)
                else:
                    for w, reply in zip(group, replies, strict=True):
                        if not w.done.done():
                            w.done.set_result(reply)
                    return
            for w in group:
                if w.done.done():
                    continue
                try:
                    reply = await commit_batch(self.pool, w.batch, w.render)
                except Exception as e:
                    if not w.done.done():
                        w.done.set_exception(e)
                else:
                    if not w.done.done():
                        w.done.set_result(reply)
        finally:
            for w in group:  # only if this task itself was cancelled half way
                if not w.done.done():
                    w.done.cancel()
            self._busy -= 1
            self._small_busy -= 1
            self._start_waiting()


async def commit_together(pool: asyncpg.Pool,
                          group: list[tuple[Batch, Render]]) -> list[StoredReply]:
    """Write the batches in one transaction, in order, each with its reply recorded.

    Raises on anything unusual; nothing of the group is then committed.
    """
    batches = [batch for batch, _ in group]
    ids = [batch.message_id for batch in batches if batch.message_id is not None]
    if len(set(ids)) != len(ids):
        raise _Ungroup("the same message_id twice in one group")
    async with pool.acquire() as conn:
        # Only a redelivery can have been answered before; for first deliveries the
        # records' insert below finds a repeated message_id all the same.
        if (ids and not all(batch.first_delivery for batch in batches)
                and await conn.fetchval(PROCESSED_ANY, ids)):
            raise _Ungroup("a batch of the group was processed before")
        async with conn.transaction():
            if not await _write_merged(conn, batches):
                await _lock_rows_in_order(conn, batches)
                for batch in batches:
                    await write_rows(conn, batch, isolate=False)
            rendered = [render(batch) for batch, render in group]
            recorded = [(batch.message_id, status, body)
                        for batch, (status, body) in zip(batches, rendered, strict=True)
                        if batch.message_id is not None]
            if recorded:
                done = await conn.fetch(PROCESSED_RECORD_MANY,
                                        *(list(c) for c in zip(*recorded, strict=True)))
                if len(done) != len(recorded):
                    raise _Ungroup("another delivery of a batch committed meanwhile")
    return [StoredReply(status, body, False) for status, body in rendered]


async def _write_merged(conn: asyncpg.Connection, batches: list[Batch]) -> bool:
    """Write batches of one entity whose keys do not overlap with one parent check and one
    upsert for all of them (each row carrying its batch's producer, timestamp and id), in
    key order like a single batch.  Without shared keys no batch can see another's writes,
    so the answers are those of writing them one after the other.  Returns False, having
    done nothing, when the batches do not qualify."""
    entity = batches[0].entity
    if any(batch.entity is not entity for batch in batches):
        return False
    key_fields = entity.key
    seen: set[tuple[Any, ...]] = set()
    for batch in batches:
        keys = {tuple(row[k] for k in key_fields) for _, row in batch.rows}
        if not seen.isdisjoint(keys):
            return False
        seen |= keys
    statements = statements_for(entity)
    missing = await missing_parents(conn, statements, batches)
    written: list[tuple[Batch, list[KeyGroup]]] = []
    rows: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    for batch in batches:
        groups = group_by_key(batch, answer_missing_parents(batch, statements, missing))
        written.append((batch, groups))
        origin = {ROW_USER: batch.user_id, ROW_SOURCE_TS: batch.source_ts,
                  ROW_MESSAGE_ID: batch.message_id}
        rows += [(g.key, {**g.row, **origin}) for g in groups]
    if rows:
        rows.sort(key=lambda keyed: keyed[0])
        returned = await upsert_json(conn, statements.upsert_rows, [row for _, row in rows])
    else:
        returned = {}
    for batch, groups in written:
        answer_groups(batch, groups, returned)
    return True


async def _lock_rows_in_order(conn: asyncpg.Connection, batches: list[Batch]) -> None:
    """Take the row locks of every stored key the group writes, table by table, keys in
    the order a single batch takes them.  Written in arrival order instead, two groups (or
    a group and a batch) in two workers lock shared keys in opposite orders and deadlock,
    each time costing the server's deadlock_timeout and a redo of the whole group."""
    keys: dict[str, tuple[Entity, set[tuple[Any, ...]]]] = {}
    for batch in batches:
        entity = batch.entity
        wanted = keys.setdefault(entity.table, (entity, set()))[1]
        wanted.update(tuple(row[k] for k in entity.key) for _, row in batch.rows)
    for table in sorted(keys):
        entity, wanted = keys[table]
        if wanted:
            columns = [list(c) for c in zip(*sorted(wanted), strict=True)]
            await conn.execute(lock_rows_statement(entity), *columns)


def _forget_database_answers(batch: Batch) -> None:
    """The answers a rolled-back group gave (404/409/201/200) are not the batch's."""
    for index, _ in batch.rows:
        batch.outcomes[index] = None
