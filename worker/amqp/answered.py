"""What is said of every answered batch: its metrics, and its "batch answered" line.

Every batch is counted in the metrics.  Every batch that is not clean gets its line: an
error, a dead letter, a retry behind it, a reply from the record, a dry run, or any item
answered other than 200 or 201.  Clean batches get theirs up to
``log.clean_batch_lines_per_s`` a second; above that they are counted, not logged, and the
next line says how many went unlogged before it (``unlogged``).  At a thousand small
batches a second the line cost about a twentieth of a batch's CPU (issue 21,
BENCHMARKS.md), and at that rate nobody reads each line: the metrics count every batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container

from worker import metrics as m
from worker.amqp.delivery import Delivery, log
from worker.core.batch import ItemStatus
from worker.processor import Answer
from worker.settings import LogSettings

_CLEAN_STATUSES = frozenset({ItemStatus.CREATED, ItemStatus.UPDATED})


class LineBudget:
    """Lines allowed at up to ``per_s`` a second, in bursts of up to a second's worth (at
    least one line); ``per_s`` 0 allows every line."""

    def __init__(self, per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_s = per_s
        self._capacity = max(1.0, per_s)
        self._tokens = self._capacity
        self._clock = clock
        self._at = clock()

    def take(self) -> bool:
        if not self.per_s:
            return True
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._at) * self.per_s)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class BatchReport:
    """Counts and logs answered batches; ``databases`` are the configured databases' names
    (the only database labels of the metrics)."""

    def __init__(self, databases: Container[str], settings: LogSettings) -> None:
        self.databases = databases
        self.budget = LineBudget(settings.clean_batch_lines_per_s)
        # Clean batches answered since the last line, without a line of their own.
        self.unlogged = 0

    def answered(self, delivery: Delivery, answer: Answer) -> None:
        self._count(answer)
        if is_clean(delivery, answer) and not self.budget.take():
            self.unlogged += 1
            m.LOG_LINES_UNLOGGED.inc()
            return
        unlogged, self.unlogged = self.unlogged, 0
        log.info(
            "batch answered", status=answer.status, entity=answer.entity,
            items=answer.item_count,
            statuses={str(k): v for k, v in answer.status_counts.items()},
            replayed=answer.replayed, dead_lettered=answer.dead_letter,
            dry_run=answer.dry_run, attempts=delivery.attempts + 1,
            duration_ms=round((time.perf_counter() - delivery.started) * 1000, 1),
            unlogged=unlogged)

    def _count(self, answer: Answer) -> None:
        # The entity is the registry's (or none); the database only a configured one.
        entity = answer.entity or "unknown"
        database = m.database_label(answer.database, self.databases)
        outcome = "dead_lettered" if answer.dead_letter else "dry_run" if answer.dry_run else (
            "replayed" if answer.replayed else "answered")
        m.batches(entity, database, outcome).inc()
        if answer.dry_run:  # its items were written by nobody
            return
        if answer.replayed:
            m.REDELIVERIES_ANSWERED.inc()
        for status, count in answer.status_counts.items():
            m.items(entity, database, m.item_status_label(status)).inc(count)
        if answer.item_count:
            m.BATCH_SIZE.observe(answer.item_count)


def is_clean(delivery: Delivery, answer: Answer) -> bool:
    """A batch answered as almost every batch is: at its first attempt, every item written."""
    return (answer.error is None and not answer.replayed and not answer.dry_run
            and delivery.attempts == 0 and _CLEAN_STATUSES.issuperset(answer.status_counts))
