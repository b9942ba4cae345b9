"""Group commit: small batches that wait for a connection share one transaction.

A 1-item batch costs little to validate but a whole transaction to write: a lookup, BEGIN,
its statements, its record, COMMIT and a flush of the WAL.  When every connection of a
database is busy, the batches that arrive queue here instead of at the pool, and the next
free connection takes all of them (up to ``group_max_batches``, at most
:data:`GROUP_MAX_ROWS` rows) and writes them in one transaction, one after the other:

- in arrival order, each with its own statements, so every batch sees the writes of the
  ones before it and gets the 201/200/404/409 answers it would get alone, in that order;
- each with its own rendered reply and its own processed-message record, in the same
  transaction, so exactly-once per message_id holds as for a batch alone;
- anything unusual (a batch seen before, an item error to isolate, a conflict, a lost
  connection) rolls the group back and commits its batches one by one with
  :func:`~worker.store.commit_batch`, each with its own outcome: a failure of one batch
  never fails another.

Nothing waits on purpose: a batch that finds a free connection is written at once, alone.
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
from worker.statements import PROCESSED_ANY, PROCESSED_RECORD, lock_rows_statement
from worker.store import StoredReply, commit_batch, write_rows

log = get_logger("worker.grouping")

Render = Callable[[Batch], tuple[int, bytes]]

# Batches with more valid rows than this are always written alone: grouping them saves
# nothing worth the larger redo if the group has to fall back.
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

    def __init__(self, pool: asyncpg.Pool, connections: int, max_batches: int) -> None:
        self.pool = pool
        self.connections = connections
        self.max_batches = max_batches
        self._busy = 0
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._tasks: set[asyncio.Task[None]] = set()

    async def commit(self, batch: Batch, render: Render) -> StoredReply:
        """Like :func:`~worker.store.commit_batch`, and with the same outcome."""
        alone = (self.max_batches <= 1 or len(batch.rows) > GROUP_MAX_ROWS
                 or (self._busy < self.connections and not self._waiting))
        if alone:
            self._busy += 1
            try:
                return await commit_batch(self.pool, batch, render)
            finally:
                self._busy -= 1
                self._start_waiting()
        waiting = _Waiting(batch, render, asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        self._start_waiting()
        # Cancelling this (shutdown past its grace) leaves the group to finish or skip it;
        # either way the request is handed back and a redelivery is answered correctly.
        return await waiting.done

    def _start_waiting(self) -> None:
        while self._waiting and self._busy < self.connections:
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
            self._start_waiting()


async def commit_together(pool: asyncpg.Pool,
                          group: list[tuple[Batch, Render]]) -> list[StoredReply]:
    """Write the batches in one transaction, in order, each with its reply recorded.

    Raises on anything unusual; nothing of the group is then committed.
    """
    ids = [batch.message_id for batch, _ in group if batch.message_id is not None]
    if len(set(ids)) != len(ids):
        raise _Ungroup("the same message_id twice in one group")
    replies = []
    async with pool.acquire() as conn:
        if ids and await conn.fetchval(PROCESSED_ANY, ids):
            raise _Ungroup("a batch of the group was processed before")
        async with conn.transaction():
            await _lock_rows_in_order(conn, [batch for batch, _ in group])
            for batch, render in group:
                await write_rows(conn, batch, isolate=False)
                status, body = render(batch)
                if batch.message_id is not None and await conn.fetchval(
                        PROCESSED_RECORD, batch.message_id, status, body) is None:
                    raise _Ungroup("another delivery of a batch committed meanwhile")
                replies.append(StoredReply(status, body, False))
    return replies


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
