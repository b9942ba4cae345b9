"""Context in every log line (issue 19, item 6): the ids of the batch being handled are
bound once per delivery (structlog's contextvars), so the lines of modules that never see
the delivery (the writer, the grouping) carry them too; a line about a group names the
group's batches, not the batch whose turn happened to start it."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
import structlog
from structlog.testing import LogCapture, capture_logs

from tests.support import samples
from tests.support.producer import Producer
from tests.support.reliability_support import prepare
from worker.core.batch import Plan
from worker.service import Worker
from worker.store import grouping, writer
from worker.store.grouping import GroupCommitter
from worker.store.writer import RecordedReply

# A value validation accepts and the database refuses: the writer isolates the item, and
# says so in a line of its own.
REFUSING_SQL = """
INSERT INTO vbapi.benefit_category VALUES ('MED');
ALTER TABLE vbapi.benefit ADD CONSTRAINT no_bad_hipaa CHECK (hipaa_code <> 'BAD');
"""
ISOLATING = "the database refused an item; writing the batch again item by item"
FELL_BACK = "group commit fell back to one transaction per batch"


def benefit(code: str, hipaa: str = "OK") -> dict[str, Any]:
    return samples.benefit(code, benefit_Category="MED", hipaA_Code=hipaa)


async def test_the_writers_lines_carry_the_ids_of_the_batch_they_are_about(
        worker: Worker, producer: Producer, db: asyncpg.Connection) -> None:
    await db.execute(REFUSING_SQL)
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as lines:
        reply = await producer.call(samples.BENEFIT_PATH,
                                    [benefit("B1"), benefit("B2", "BAD")], message_id="logged")
    assert [item["status"] for item in reply.body["data"]] == [201, 400]
    activity_id = reply.body["debug"]["activityID"]
    assert reply.headers["activity-id"] == activity_id

    events = [line["event"] for line in lines]
    assert ISOLATING in events and "batch answered" in events, events
    for line in lines:  # the writer's, the consumer's: every line of the delivery
        assert (line.get("message_id"), line.get("activity_id"), line.get("database")) == (
            "logged", activity_id, "demo"), line


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Iterator[LogCapture]:
    """The grouping's and the writer's lines, at every level, with the context merged as
    the worker's configuration does (worker/logs.py)."""
    capture = LogCapture()
    logger = structlog.wrap_logger(
        structlog.PrintLogger(), wrapper_class=structlog.BoundLogger,
        processors=[structlog.contextvars.merge_contextvars, capture])
    monkeypatch.setattr(grouping, "log", logger)
    monkeypatch.setattr(writer, "log", logger)
    yield capture


async def test_a_groups_lines_name_its_batches_and_a_batch_alone_its_own(
        dsn: str, db: asyncpg.Connection, captured: LogCapture) -> None:
    """Three batches wait behind a fourth for the only connection and go as one group; one
    holds an item the database refuses, so the group falls back to one transaction per
    batch, and that batch's writer isolates the item."""
    await db.execute(REFUSING_SQL)
    plans = [dataclasses.replace(prepare(samples.BENEFIT_PATH, items, message_id=mid),
                                 activity_id=f"act-{mid}")
             for mid, items in (("first", [benefit("B0")]), ("g1", [benefit("B1")]),
                                ("g2", [benefit("B2"), benefit("B3", "BAD")]),
                                ("g3", [benefit("B4")]))]
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        committer = GroupCommitter(pool, connections=1, max_batches=32)
        replies = await asyncio.gather(*(as_delivery(committer, plan) for plan in plans))
    finally:
        await pool.close()
    assert [r.replayed for r in replies] == [False] * 4

    (fell_back,) = [line for line in captured.entries if line["event"] == FELL_BACK]
    assert fell_back["message_ids"] == ["g1", "g2", "g3"]
    assert fell_back["activity_ids"] == ["act-g1", "act-g2", "act-g3"]
    assert "message_id" not in fell_back and "activity_id" not in fell_back
    (isolating,) = [line for line in captured.entries if line["event"] == ISOLATING]
    assert (isolating["message_id"], isolating["activity_id"], isolating["database"]) == (
        "g2", "act-g2", "demo")


async def as_delivery(committer: GroupCommitter, plan: Plan) -> RecordedReply:
    """Commit as the consumer does: the delivery's ids bound for its task's lines."""
    with structlog.contextvars.bound_contextvars(message_id=plan.message_id,
                                                 activity_id=plan.activity_id,
                                                 database=plan.database):
        return await committer.commit(plan)
