"""A worker in the test's own event loop, consuming until a block ends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from tests.waiting import wait_until
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


def running(settings: Settings) -> contextlib.AbstractAsyncContextManager[Worker]:
    """A worker made from ``settings``, consuming until the block ends."""
    return consuming(Worker(settings))
