"""Group commit: small batches that wait for a connection share one transaction.

A 1-item batch costs little to validate but a whole transaction to write: BEGIN, its
statements, its record, COMMIT and a flush of the WAL, each a round trip.  Small batches
(:data:`SMALL_BATCH_ROWS`) are therefore written by at most ``group_connections``
transactions at a time (fewer transactions of more batches each beat many small ones, see
BENCHMARKS.md); those that arrive meanwhile queue here instead of at the
pool, and the next free turn takes all of them (up to ``group_max_batches``, at most
:data:`GROUP_MAX_ROWS` rows) into one transaction:

- batches of one entity that share no key (the usual case) with one parent check, one
  upsert and one insert of their records for all of them: a group of n batches costs a
  few round trips, not three per batch;
- others in arrival order, each with its own statements, so every batch sees the writes
  of the ones before it;
- either way every batch gets the 201/200/404/409 answers it would get alone, in order;
- each with its own rendered reply and its own processed-message record, in the same
  transaction, so exactly-once per message_id holds as for a batch alone;
- anything unusual (a batch seen before, an item error to isolate, a conflict, a lost
  connection) rolls the group back and commits its batches one by one, each with its own
  outcome: a failure of one batch never fails another.

A group is written by a task of its own, whose log lines name the group's batches
(``message_ids``, ``activity_ids``); a batch of it committed alone after all is written in
the context its delivery bound, so its lines carry its own ids as if it had never waited.

How a group is written is the writer's (worker/store/writer.py); this module only decides which
batches go together, and when.

Nothing waits on a timer: a batch that finds a free turn is written at once, alone.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
from dataclasses import dataclass, field

import asyncpg
import structlog

from worker.core.batch import Plan
from worker.logs import get_logger
from worker.store.writer import RecordedReply, commit_batch, commit_group

log = get_logger("worker.store.grouping")

# Batches with at most this many valid rows are small: their transaction costs more than
# their rows, so at most ``group_connections`` of them are written at a time and the others
# wait to go in groups.  Larger batches are always written alone, on any free connection.
SMALL_BATCH_ROWS = 100
# The rows of one group at most: a larger group saves nothing worth its larger redo should
# it have to fall back.
GROUP_MAX_ROWS = 1000


@dataclass
class _Waiting:
    plan: Plan
    done: asyncio.Future[RecordedReply]
    # The context of the batch's own handling (the ids its delivery bound for logging).
    context: contextvars.Context = field(default_factory=contextvars.copy_context)


class GroupCommitter:
    """Commits the batches of one database, grouping those that would wait for a connection."""

    def __init__(self, pool: asyncpg.Pool, connections: int, max_batches: int,
                 group_connections: int = 1) -> None:
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

    async def commit(self, plan: Plan) -> RecordedReply:
        """Like :func:`~worker.store.writer.commit_batch`, and with the same outcome."""
        # A dry run is always written alone: its transaction is rolled back.
        small = (self.max_batches > 1 and not plan.dry_run
                 and len(plan.rows) <= SMALL_BATCH_ROWS)
        if not small or (self._free() and not self._waiting):
            self._busy += 1
            self._small_busy += small
            try:
                return await commit_batch(self.pool, plan)
            finally:
                self._busy -= 1
                self._small_busy -= small
                self._start_waiting_soon()
        waiting = _Waiting(plan, asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        self._start_waiting()
        # Cancelling this (shutdown past its grace) leaves the group to finish or skip it;
        # either way the request is handed back and a redelivery is answered correctly.
        return await waiting.done

    def _start_waiting_soon(self) -> None:
        """The next group once the batches ready to run now have had their turn: those
        about to reach their commit join it instead of the group after."""
        asyncio.get_running_loop().call_soon(self._start_waiting)

    def _start_waiting(self) -> None:
        while self._waiting and self._free():
            group = self._next_group()
            if not group:
                return
            self._busy += 1
            self._small_busy += 1
            # In an empty context: the group's lines name its batches (_commit_together),
            # not the batch whose turn happened to start it.
            task = asyncio.create_task(self._commit_group(group), context=contextvars.Context())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _next_group(self) -> list[_Waiting]:
        """The waiting batches the next transaction takes, in arrival order."""
        group: list[_Waiting] = []
        rows = 0
        while self._waiting and len(group) < self.max_batches:
            head = self._waiting[0]
            if head.done.done():  # its request was cancelled meanwhile
                self._waiting.popleft()
                continue
            if group and rows + len(head.plan.rows) > GROUP_MAX_ROWS:
                break
            group.append(self._waiting.popleft())
            rows += len(head.plan.rows)
        return group

    async def _commit_group(self, group: list[_Waiting]) -> None:
        try:
            if len(group) > 1 and await _committed_together(self.pool, group):
                return
            for w in group:
                if not w.done.done():
                    # In the batch's own context: its lines carry its own ids.
                    await asyncio.create_task(_commit_alone(self.pool, w), context=w.context)
        finally:
            for w in group:  # only if this task itself was cancelled half way
                if not w.done.done():
                    w.done.cancel()
            self._busy -= 1
            self._small_busy -= 1
            self._start_waiting_soon()


async def _committed_together(pool: asyncpg.Pool, group: list[_Waiting]) -> bool:
    """Whether the group went in as one transaction (each batch then has its reply); if
    not, nothing of it was committed."""
    plans = [w.plan for w in group]
    with structlog.contextvars.bound_contextvars(
            database=plans[0].database, message_ids=[p.message_id for p in plans],
            activity_ids=[p.activity_id for p in plans]):
        try:
            replies = await commit_group(pool, plans)
        except Exception as e:
            log.debug("group commit fell back to one transaction per batch",
                      batches=len(group), reason=repr(e))
            return False
    for w, reply in zip(group, replies, strict=True):
        if not w.done.done():
            w.done.set_result(reply)
    return True


async def _commit_alone(pool: asyncpg.Pool, waiting: _Waiting) -> None:
    try:
        reply = await commit_batch(pool, waiting.plan)
    except Exception as e:
        if not waiting.done.done():
            waiting.done.set_exception(e)
    else:
        if not waiting.done.done():
            waiting.done.set_result(reply)
