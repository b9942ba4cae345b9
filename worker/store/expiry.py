"""Processed message ids are kept for the retention period (a redelivery within it is
answered from its record), then forgotten."""

from __future__ import annotations

import datetime as dt

import asyncpg

from worker.store.pools import Databases
from worker.store.statements import PROCESSED_EXPIRE

# Processed message ids are forgotten this many at a time: short transactions that never
# hold many row locks, so the cleanup does not get in the way of the writes.
EXPIRE_CHUNK_ROWS = 5000


async def expire_everywhere(databases: Databases, retention_days: float) -> int:
    """Forget processed message ids older than the retention, in every open database;
    returns how many were forgotten."""
    forgotten = 0
    for pool in databases.open_pools().values():
        forgotten += await expire_processed(pool, retention_days)
    return forgotten


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
