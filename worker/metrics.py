"""Prometheus metrics of the worker (served by ``worker.http.health``)."""

from __future__ import annotations

import functools
from collections.abc import Container
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from worker.core.batch import ItemStatus
from worker.settings import UNCONFIGURED_DATABASE

# Label values come from the configuration, the declarations and the statuses the worker
# answers with, never from what a message says: each made-up database name a producer
# sent would otherwise be a series of its own, kept for the life of the process.
OTHER_STATUS = "other"
_ITEM_STATUSES = frozenset(ItemStatus)


def database_label(name: str | None, configured: Container[str]) -> str:
    """A configured database's name; every other one (or none) counts as one."""
    return name if name is not None and name in configured else UNCONFIGURED_DATABASE


def item_status_label(status: int) -> str:
    # A recorded reply is read back from the database: not trusted to hold only these.
    return str(int(status)) if status in _ITEM_STATUSES else OTHER_STATUS


BATCHES = Counter("upsert_batches_total", "Batches that reached an outcome",
                  ["entity", "database", "outcome"])
ITEMS = Counter("upsert_items_total", "Items answered, by item status",
                ["entity", "database", "status"])
RETRIES = Counter("upsert_retries_total", "Batches sent to a retry delay queue",
                  ["reason"])
DEAD_LETTERS = Counter("upsert_dead_letters_total", "Batches dead-lettered, by error status",
                       ["status"])
DATABASE_CONFLICTS = Counter("upsert_database_conflicts_total",
                             "Deadlocks (40P01) and serialization failures (40001) retried "
                             "in place", ["sqlstate"])
REDELIVERIES_ANSWERED = Counter("upsert_redeliveries_answered_total",
                                "Redelivered batches answered from the recorded reply")
BATCH_LATENCY = Histogram("upsert_batch_latency_seconds",
                          "From receiving a batch to acknowledging it",
                          buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
DB_WRITE_TIME = Histogram("upsert_db_write_seconds", "Database time of one batch",
                          buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5))
BATCH_SIZE = Histogram("upsert_batch_items", "Items per batch",
                       buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000))
IN_FLIGHT = Gauge("upsert_batches_in_flight", "Batches being processed now")
# The queue is consumed in order, so the batch received now is about the oldest waiting:
# its age is what an "oldest message too old" alert watches, with no broker plugin needed.
BATCH_WAIT = Gauge("upsert_batch_wait_seconds",
                   "Age (since its producer's timestamp) of the batch received last")
BROKER_UP = Gauge("upsert_broker_connected", "1 while connected to the broker")
BROKER_FAILOVERS = Counter("upsert_broker_failovers_total",
                           "Broker connections lost and made again (to the same node or "
                           "another)")
DATABASE_UP = Gauge("upsert_database_connected",
                    "1 while the database answered its last use", ["database"])
LOG_LINES_UNLOGGED = Counter("upsert_batch_lines_unlogged_total",
                             "Clean batches answered above log.clean_batch_lines_per_s, "
                             "counted here and in upsert_batches_total but given no "
                             "'batch answered' line of their own")


# The children of the labelled metrics a batch touches, each looked up once: labels() takes
# a lock and checks its values every time, a few microseconds each, and a batch touched
# three to five of them (issue 21).  The label values come only from the configuration,
# the declarations and the statuses (above), so these caches stay small.
@functools.cache
def batches(entity: str, database: str, outcome: str) -> Any:
    return BATCHES.labels(entity=entity, database=database, outcome=outcome)


@functools.cache
def items(entity: str, database: str, status: str) -> Any:
    return ITEMS.labels(entity=entity, database=database, status=status)


@functools.cache
def database_up(database: str) -> Any:
    return DATABASE_UP.labels(database=database)
