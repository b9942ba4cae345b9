"""Each configured database migrated once per worker process, before its first batch.

At start the worker migrates every database at once (worker/service.py), after it has
declared its topology, and consumes meanwhile: a batch waits for its own database's
migration only.  A database that is down is not fatal: its batches fail as transient
failures (retried through the delay queues) and it is migrated before the first batch
once it answers.  One whose migration is refused (a change that could lose stored data,
worker/store/migrations.py) is *parked* until the worker restarts: said once in the log and in
``/readyz``, its batches answered 503 through the same retries, and the migration, which
would be refused again, not run for each of them.
"""

from __future__ import annotations

import asyncio

from schemas.registry import Registry
from worker.core import errors
from worker.logs import get_logger
from worker.settings import Settings
from worker.store import failures
from worker.store.migrations import MigrationRefused, migrate

log = get_logger("worker.store.migrating")


class Migrator:
    """Which databases this process has migrated or parked, and the migration of the
    others, one at a time per database."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self._settings = settings
        self._registry = registry
        self.migrated: set[str] = set()
        # database -> why its migration was refused
        self.parked: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # database -> the failure of its last attempt, while it is down
        self._failures: dict[str, errors.TransientFailure] = {}

    async def ensure(self, name: str) -> None:
        """Return once the database is migrated; raises TransientFailure while it is down
        or parked."""
        if name in self.migrated:
            return
        if name in self.parked:
            raise _parked_failure(name, self.parked[name])
        lock = self._locks.setdefault(name, asyncio.Lock())
        waited = lock.locked()
        if waited and name in self._failures:
            # Down at the last attempt, and another one under way: not worth holding a
            # prefetch slot for up to a connect timeout; the batch goes to its retry.
            raise errors.TransientFailure(self._failures[name].detail)
        async with lock:
            if name in self.migrated:
                return
            if name in self.parked:
                raise _parked_failure(name, self.parked[name])
            if waited and name in self._failures:
                # The attempt this batch waited for failed: its outcome, rather than one
                # more connect timeout for each batch that waited.
                raise errors.TransientFailure(self._failures[name].detail)
            await self._attempt(name)

    async def _attempt(self, name: str) -> None:
        dsn = self._settings.databases[name].dsn.get_secret_value()
        try:
            applied = await migrate(dsn, self._registry)
        except MigrationRefused as e:
            self._park(name, str(e))
            raise _parked_failure(name, str(e)) from e
        except Exception as e:
            # The connection lost half way, say; anything else is a bug, raised as it is.
            failure = failures.classify_database_error(e)
            if failure is None:
                raise
            self._failures[name] = failure
            failures.reraise(failure, e)  # migrate's TransientFailure keeps its cause
        self._failures.pop(name, None)
        self.migrated.add(name)
        log.info("database migrated", database=name, applied=applied)

    def _park(self, name: str, reason: str) -> None:
        self.parked[name] = reason
        log.error("database parked: its migration was refused; its batches are answered 503 "
                  "until the data or the declarations are fixed and the worker restarted",
                  database=name, reason=reason)


def _parked_failure(name: str, reason: str) -> errors.TransientFailure:
    return errors.TransientFailure(f"database {name} is parked: migration refused: {reason}")
