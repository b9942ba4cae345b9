"""Helpers of the console's tests: its settings, the console served in the test's event
loop, and dead letters put straight into ``vbapi.dead``."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from tests.support.operations_support import put_dead_letters
from tests.support.samples import benefit
from tests.support.services import serving_app
from worker.console.app import build_app, sampling
from worker.console.context import Console
from worker.settings import ConsoleSettings, Settings

OPERATOR, KEY = "alice", "alice-console-key-0123456789"
SESSION_KEY = "console-session-key-never-shown"


def digest(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def console_settings(settings: Settings, **console: Any) -> Settings:
    """``settings`` with a console: the operator alice, a fixed session key, quick sampling."""
    values: dict[str, Any] = {"operators": {OPERATOR: digest(KEY)},
                              "session_key": SESSION_KEY, "workers": [],
                              "sample_interval_s": 0.5, **console}
    return settings.model_copy(update={"console": ConsoleSettings(**values)})


@contextlib.asynccontextmanager
async def serving_console(settings: Settings) -> AsyncIterator[tuple[str, Console]]:
    """The console on a port of its own in this event loop: its base URL, and its state."""
    console = Console(settings)
    async with sampling(console), serving_app(build_app(console)) as url:
        yield url, console


async def put_dead(url: str, count: int, status_of: Callable[[int], int] = lambda n: 404,
                   database: str = "demo", **headers: Any) -> None:
    """``count`` dead letters of two benefits each for ``database``, as the worker would
    have dead-lettered them; ``headers`` added to (or replacing) each one's."""
    await put_dead_letters(url, count, status_of, database=database, **headers,
                           letter=lambda n: {"body": orjson.dumps([benefit(f"C{n}"),
                                                                   benefit(f"D{n}")])})
