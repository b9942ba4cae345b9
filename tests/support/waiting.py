"""Waiting for something to happen, in the tests' own event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


async def wait_until(predicate: Callable[[], Any], timeout_s: float = 15.0,
                     interval_s: float = 0.05, *, failure: Callable[[], str] | None = None
                     ) -> Any:
    """Poll a plain or async ``predicate`` until it returns something truthy; return that.
    After ``timeout_s``, fail with ``failure()`` if given (it may say what was seen)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(failure() if failure else
                                 f"condition not met within {timeout_s} s")
        await asyncio.sleep(interval_s)
