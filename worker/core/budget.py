"""A budget of body bytes in progress, so that memory is bounded by bytes, not by messages.

A validated item takes several times its JSON size in memory (a dict of Python objects,
its row for PostgreSQL, its reply), and prefetch counts messages whatever their size: 16
bodies of 10,000 items each, all validated at once, is a quarter of a gigabyte.  Each batch
holds its body's length of the budget (``limits.max_bytes_in_progress``) while it is
validated and written; when the budget is spent, the next one waits its turn (first come,
first served), still unacknowledged.
One body alone may always go, whatever its size.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator


class ByteBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._waiting: collections.deque[tuple[int, asyncio.Future[None]]] = (
            collections.deque())

    @contextlib.asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        await self._acquire(size)
        try:
            yield
        finally:
            self.used -= size
            self._wake()

    def _fits(self, size: int) -> bool:
        return self.used == 0 or self.used + size <= self.limit

    async def _acquire(self, size: int) -> None:
        if not self._waiting and self._fits(size):
            self.used += size
            return
        turn = asyncio.get_running_loop().create_future()
        self._waiting.append((size, turn))
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # granted as it was cancelled
                self.used -= size
            self._wake()  # a cancelled head must not hold up the ones behind it
            raise

    def _wake(self) -> None:
        while self._waiting:
            size, turn = self._waiting[0]
            if turn.done():  # cancelled while waiting
                self._waiting.popleft()
                continue
            if not self._fits(size):
                return
            self._waiting.popleft()
            self.used += size
            turn.set_result(None)
