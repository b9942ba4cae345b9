"""One batch from request to answer: intake (plan) -> store (outcome) -> replies.

Knows nothing of AMQP: the consumer hands it a :class:`~worker.core.request.Request` and gets
an :class:`Answer` back, or a :class:`~worker.core.errors.TransientFailure` to retry later.
The pipeline's values are in worker/core/batch.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import asyncpg
import orjson

from schemas.registry import Registry, default_registry
from worker import metrics as m
from worker.core import errors
from worker.core.budget import ByteBudget
from worker.core.errors import UpsertError
from worker.core.intake import IntakeRules, prepare_batch
from worker.core.replies import problem_reply, status_counts
from worker.core.request import Request
from worker.logs import get_logger
from worker.redaction import mask_detail, secrets_of
from worker.settings import Settings
from worker.store import failures
from worker.store.grouping import GroupCommitter
from worker.store.migrating import Migrator
from worker.store.pools import Databases
from worker.store.statements import PROCESSED_LOOKUP
from worker.store.writer import RecordedReply

log = get_logger("worker.processor")


@dataclass
class Answer:
    """What the worker answers to one request, and whether the request goes to the
    dead-letter queue (with the error that sent it there)."""

    status: int
    body: bytes
    entity: str | None
    database: str | None
    path: str | None
    error: UpsertError | None = None
    # How many items got each status, and how many items there were.
    status_counts: dict[int, int] = field(default_factory=dict)
    item_count: int = 0
    # True when a redelivery was answered from the recorded reply.
    replayed: bool = False
    # The activity id in the body: a recorded reply keeps the one of its first answer.
    activity_id: str | None = None
    # A dry run's answer: nothing was written; never dead-lettered (nothing to replay).
    dry_run: bool = False

    @property
    def dead_letter(self) -> bool:
        return self.error is not None and not self.dry_run


class Processor:
    """Validates and writes batches; collaborators are created from settings by default."""

    def __init__(self, settings: Settings, databases: Databases | None = None,
                 registry: Registry | None = None) -> None:
        self.settings = settings
        self.databases = databases or Databases(settings)
        self.registry = registry or default_registry()
        self.intake_rules = IntakeRules.of(settings)
        self.budget = ByteBudget(settings.limits.max_bytes_in_progress)
        self._committers: dict[str, GroupCommitter] = {}
        # Masked in the failures it answers with: a driver's message may quote a DSN.
        self._secrets = secrets_of(settings)
        # Each database migrated before its first batch (worker/store/migrating.py).
        self.migrator = Migrator(settings, self.registry)

    async def process(self, request: Request, received_at: dt.datetime,
                      activity_id: str) -> Answer:
        """Answer the request, writing its valid items.  Raises TransientFailure."""
        async with self.budget.hold(len(request.body)):
            return await self._process(request, received_at, activity_id)

    async def _process(self, request: Request, received_at: dt.datetime,
                       activity_id: str) -> Answer:
        try:
            plan = prepare_batch(request, self.intake_rules, self.registry, received_at,
                                 activity_id)
        except errors.MessageRejected as e:
            return self.refusal(e, request, activity_id)
        up = m.database_up(plan.database)
        started = time.perf_counter()
        try:
            await self.ensure_migrated(plan.database)
            pool = await self.databases.pool(plan.database)
            stored = await self._committer(plan.database, pool).commit(plan)
        except errors.TransientFailure as e:
            up.set(0)
            mask_detail(e, self._secrets)
            raise
        up.set(1)
        m.DB_WRITE_TIME.observe(time.perf_counter() - started)
        # A reply from the record counts the answers known before the database only.
        answers = plan.known if stored.outcome is None else stored.outcome.answers
        return Answer(status=stored.status, body=stored.body, entity=plan.entity.name,
                      database=plan.database, path=plan.path,
                      status_counts=status_counts(answers), item_count=len(plan.known),
                      replayed=stored.replayed, activity_id=stored.activity_id,
                      dry_run=plan.dry_run)

    async def recorded(self, request: Request) -> Answer | None:
        """The recorded outcome of a batch whose writes committed (by message_id), else None
        (always None for a dry run: it is never answered from a record).

        One indexed lookup and no decoding of the body, so it is safe even for a delivery
        that keeps killing workers.  Raises TransientFailure when the database is down.
        """
        database, message_id = request.database, request.message_id
        if (not database or not message_id or database not in self.settings.databases
                or request.dry_run):
            return None
        pool = await self.databases.pool(database)
        try:
            row = await pool.fetchrow(PROCESSED_LOOKUP, request.user_id or "", message_id)
        except Exception as e:
            failures.reraise(failures.classify_database_error(e), e)
        if row is None:
            return None
        stored = RecordedReply.of(row)
        reply = orjson.loads(stored.body)
        route = self.registry.route(request.path) if request.path else None
        statuses = [item["status"] for item in reply.get("data") or []]
        return Answer(status=stored.status, body=stored.body,
                      entity=route.entity.name if route else None, database=database,
                      path=request.path, status_counts=dict(Counter(statuses)),
                      item_count=len(statuses), replayed=True,
                      activity_id=stored.activity_id)

    async def ensure_migrated(self, name: str) -> None:
        """Migrate the database unless done already; TransientFailure while it is down or
        parked (its migration refused)."""
        await self.migrator.ensure(name)

    async def start(self) -> None:
        """The worker's start-up: migrate every configured database at once.  One that is
        down or parked is logged, not fatal: its batches are retried, and it is migrated
        before the first once it answers (worker/store/migrating.py)."""
        await asyncio.gather(*(self._migrate_at_start(name) for name in self.settings.databases))

    async def _migrate_at_start(self, name: str) -> None:
        try:
            await self.ensure_migrated(name)
        except errors.TransientFailure as e:
            if name not in self.migrator.parked:  # a parked one was said already
                log.warning("database not migrated: unreachable; it is migrated before its "
                            "first batch once it answers", database=name, error=e.detail)
        except Exception as e:
            log.error("database migration failed", database=name, error=repr(e))

    @property
    def parked(self) -> Mapping[str, str]:
        """The databases whose migration was refused, with the reason (for /readyz)."""
        return self.migrator.parked

    def _committer(self, name: str, pool: asyncpg.Pool) -> GroupCommitter:
        committer = self._committers.get(name)
        if committer is None or committer.pool is not pool:  # none yet, or a reopened pool
            db = self.settings.databases[name]
            committer = GroupCommitter(pool, db.pool_max_size, db.group_max_batches,
                                        db.group_connections)
            self._committers[name] = committer
        return committer

    def refusal(self, error: UpsertError, request: Request, activity_id: str) -> Answer:
        """A whole-message error reply, built from the error; the request is dead-lettered,
        unless it is a dry run."""
        path = request.path
        route = self.registry.route(path) if path else None
        body = problem_reply(error, path, activity_id, dry_run=request.dry_run)
        return Answer(status=error.status, body=body,
                      entity=route.entity.name if route else None, database=request.database,
                      path=path, error=error, activity_id=activity_id,
                      dry_run=request.dry_run)
