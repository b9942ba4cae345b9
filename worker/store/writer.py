"""The write path: batches' plans into their database, exactly once per message_id.

One transaction writes one batch, or a group of small batches (worker/store/grouping.py decides
which), in a fixed number of round trips whatever their size: the rows (worker/store/rows.py),
which answer each attempt in an outcome of its own, then each batch's 207 reply, rendered
from its plan and that outcome and recorded under its message_id in the same transaction,
so that a redelivery is answered from the record and writes nothing.  An attempt rolled
back leaves nothing behind: its outcome goes with it, and the next attempt starts afresh
from the plan.

A batch alone whose upsert hit an item error is written again item-isolating.  A deadlock
or serialization failure (another writer, a trigger) is retried in place a few times, with
a short jittered pause, before the batch goes the slow way through the delay queues.  A
group never isolates nor retries: anything unusual raises, its transaction is rolled back,
and its batches are committed one by one.

A dry run (``plan.dry_run``) takes the same path up to the commit: its rows are written
and answered in a transaction that is then rolled back, and nothing is recorded; it is
never answered from a record (a recorded message_id only adds ``debug.processedBefore``)
and never joins a group.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import asyncpg
import orjson

from worker import metrics as m
from worker.core.batch import Outcome, Plan
from worker.core.errors import InternalSignal
from worker.core.replies import MULTI_STATUS, batch_reply
from worker.logs import get_logger
from worker.store import failures
from worker.store.rows import IsolateItems, write_rows
from worker.store.statements import (
    PROCESSED_ANY,
    PROCESSED_LOOKUP,
    PROCESSED_RECORD,
    PROCESSED_RECORD_MANY,
)

log = get_logger("worker.store.writer")

# In-place tries of a transaction that hit a deadlock or serialization failure, and the
# first pause between them (doubled each time, fully jittered so the two sides of a
# deadlock do not meet again in step).
CONFLICT_ATTEMPTS = 4
CONFLICT_BACKOFF_S = 0.05


@dataclass(frozen=True)
class RecordedReply:
    """A batch's reply as recorded with its writes."""

    status: int
    body: bytes
    # True when the batch had been processed before and this is the recorded reply.
    replayed: bool
    # The activity id in the body (a recorded reply keeps the one of its first answer).
    activity_id: str
    # The answers the body was rendered from; None for a reply from the record.
    outcome: Outcome | None = None

    @classmethod
    def of(cls, stored: asyncpg.Record) -> RecordedReply:
        """The reply as recorded, from a PROCESSED_LOOKUP row."""
        body = bytes(stored["reply"])
        return cls(stored["status"], body, True,
                   stored["activity_id"] or _activity_in(body))


def _activity_in(reply: bytes) -> str:
    """The activity id of a reply recorded before the record kept it in a column of its
    own (schema migration 2 added the column, without filling it).  Such records expire
    ``worker.processed_retention_days`` after it; then this can go."""
    return str(orjson.loads(reply)["debug"]["activityID"])


class GroupRefused(InternalSignal):
    """The group cannot be committed together: commit its batches one by one."""


class _AlreadyProcessed(InternalSignal):
    """Another delivery of the same message_id committed first."""


async def commit_batch(pool: asyncpg.Pool, plan: Plan, *,
                       conflict_attempts: int = CONFLICT_ATTEMPTS) -> RecordedReply:
    """Write the batch and record its reply, exactly once per message_id.

    A deadlock or serialization failure is retried here up to ``conflict_attempts`` times
    in all; transient database failures are raised as
    :class:`~worker.core.errors.TransientFailure`.
    """
    try:
        async with pool.acquire() as conn:
            attempt = 1
            while True:
                try:
                    return await _commit_once(conn, plan)
                except Exception as e:
                    if not failures.is_conflict(e) or attempt >= conflict_attempts:
                        raise
                    sqlstate = getattr(e, "sqlstate", "")
                    m.DATABASE_CONFLICTS.labels(sqlstate=sqlstate).inc()
                    log.info("database conflict; retrying in place", sqlstate=sqlstate,
                             attempt=attempt)
                    # Rolled back, its outcome with it: try again once the other
                    # transaction has had a moment to finish.
                    await asyncio.sleep(random.uniform(0, CONFLICT_BACKOFF_S * 2 ** attempt))
                    attempt += 1
    except Exception as e:
        transient = failures.classify_database_error(e)
        if transient is not None and failures.is_on_standby(e):
            # New connections go where target_session_attrs says: the new primary.
            await pool.expire_connections()
        failures.reraise(transient, e)


async def commit_group(pool: asyncpg.Pool, plans: list[Plan]) -> list[RecordedReply]:
    """Write the batches in one transaction, in order, each with its reply recorded.

    Raises on anything unusual (:class:`GroupRefused` when it is known up front); nothing
    of the group is then committed.
    """
    ids = [(plan.producer, plan.message_id) for plan in plans
           if plan.message_id is not None]
    if len(set(ids)) != len(ids):
        raise GroupRefused("the same message_id of one producer twice in one group")
    if any(plan.dry_run for plan in plans):  # grouping.py never sends one; said here too
        raise GroupRefused("a dry run is never committed with other batches")
    async with pool.acquire() as conn:
        # Only a redelivery can have been answered before; for first deliveries the
        # records' insert finds a repeated message_id all the same.
        if (ids and not all(plan.first_delivery for plan in plans)
                and await conn.fetchval(PROCESSED_ANY, *map(list, zip(*ids, strict=True)))):
            raise GroupRefused("a batch of the group was processed before")
        return await _transaction(conn, plans, isolate=False)


async def _commit_once(conn: asyncpg.Connection, plan: Plan) -> RecordedReply:
    """One try: answer from the record, else write in one transaction (twice if an item
    error has to be isolated)."""
    if plan.dry_run:
        return await _rehearse(conn, plan)
    if plan.message_id is not None and not plan.first_delivery:
        # The primary key alone: a redelivery costs one index lookup.  A first delivery
        # skips it: should its id be recorded after all (a producer sent it twice), the
        # record's insert conflicts and the answer comes from the record then.
        stored = await conn.fetchrow(PROCESSED_LOOKUP, plan.producer, plan.message_id)
        if stored is not None:
            return RecordedReply.of(stored)
    try:
        try:
            (reply,) = await _transaction(conn, [plan], isolate=False)
        except IsolateItems as e:
            log.info("the database refused an item; writing the batch again item by item",
                     sqlstate=getattr(e.__cause__, "sqlstate", None))
            (reply,) = await _transaction(conn, [plan], isolate=True)
        return reply
    except _AlreadyProcessed:
        stored = await conn.fetchrow(PROCESSED_LOOKUP, plan.producer, plan.message_id)
        return RecordedReply.of(stored)


async def _rehearse(conn: asyncpg.Connection, plan: Plan) -> RecordedReply:
    """A dry run: the rows written and answered as for real (twice if an item error has to
    be isolated), then rolled back; no record is looked up for the answers, none made."""
    for isolate in (False, True):
        transaction = conn.transaction()
        await transaction.start()
        try:
            (outcome,) = await write_rows(conn, [plan], isolate=isolate)
            before = plan.message_id is not None and await conn.fetchrow(
                PROCESSED_LOOKUP, plan.producer, plan.message_id) is not None
        except IsolateItems:
            if isolate:  # isolating never raises it; should it, it is a bug
                raise
            continue
        finally:
            await transaction.rollback()
        body = batch_reply(plan, outcome, processed_before=before)
        return RecordedReply(MULTI_STATUS, body, False, plan.activity_id, outcome)
    raise AssertionError("unreachable")


async def _transaction(conn: asyncpg.Connection, plans: list[Plan], *,
                       isolate: bool) -> list[RecordedReply]:
    """One attempt: the plans' rows written and their replies recorded, each rendered from
    the attempt's own outcome."""
    async with conn.transaction():
        outcomes = await write_rows(conn, plans, isolate=isolate)
        bodies = [batch_reply(plan, outcome)
                  for plan, outcome in zip(plans, outcomes, strict=True)]
        await _record(conn, plans, bodies)
    return [RecordedReply(MULTI_STATUS, body, False, plan.activity_id, outcome)
            for plan, outcome, body in zip(plans, outcomes, bodies, strict=True)]


async def _record(conn: asyncpg.Connection, plans: list[Plan], bodies: list[bytes]) -> None:
    """Record each batch's reply under its producer and message_id, with its path and
    activity id; raises _AlreadyProcessed if another delivery of one of them committed
    first."""
    records = [(plan.producer, plan.message_id, plan.path, plan.activity_id,
                MULTI_STATUS, body)
               for plan, body in zip(plans, bodies, strict=True)
               if plan.message_id is not None]
    if len(records) == 1:
        if await conn.fetchval(PROCESSED_RECORD, *records[0]) is None:
            raise _AlreadyProcessed
    elif records:
        columns = [list(column) for column in zip(*records, strict=True)]
        if len(await conn.fetch(PROCESSED_RECORD_MANY, *columns)) != len(records):
            raise _AlreadyProcessed
