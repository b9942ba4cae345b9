"""A worker in the test's own event loop, consuming until a block ends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from tests.support.waiting import wait_until
from worker.service import Worker
from worker.settings import Settings


@contextlib.asynccontextmanager
async def consuming(worker: Worker) -> AsyncIterator[Worker]:
    """The worker consuming in this event loop until the block ends."""
    task = asyncio.create_task(worker.run())
    try:
        await wait_until(lambda: worker.consuming or task.done(), timeout_s=30)
        if task.done():
            task.result()
        yield worker
    finally:
        worker.stopping.set()
        await asyncio.wait_for(task, timeout=30)


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Worker]:
    """A worker made from ``settings``, consuming until the block ends, its start-up
    migrations settled (so that their log lines come before the block's own output)."""
    async with consuming(Worker(settings)) as worker:
        await asyncio.wait_for(migrations_settled(worker), timeout=30)
        yield worker


async def migrations_settled(worker: Worker) -> None:
    """Wait until the worker's start-up migrations have run: each database migrated,
    parked, or found down (then migrated before its first batch)."""
    if worker.migrations is not None:
        await asyncio.shield(worker.migrations)
