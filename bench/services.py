"""The benchmark's own corner of the local services: a vhost and databases it made, and the
worker processes it started.  Everything is removed again, and nothing else is touched.

Where the services are is read as the tests read it (tests/support/services.py), the
benchmark's own ``BENCH_*`` variables first, then the ``TEST_*`` ones."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg

from bench.data import seed_parents
from tests.support.configs import merged, write_toml
from tests.support.services import Services, unique

SERVICES = Services.from_env("BENCH", "TEST")
amqp_url = SERVICES.amqp_url


def own_vhost() -> contextlib.AbstractContextManager[str]:
    """A fresh vhost for one measurement, deleted before the next one starts (deleting it
    in the background would take CPU from that one)."""
    return SERVICES.vhost("bench")


@contextlib.asynccontextmanager
async def own_database(*, migrated: bool = True) -> AsyncIterator[str]:
    """A fresh PostgreSQL database (its DSN), migrated unless asked not to, dropped
    afterwards."""
    from worker.store.migrations import migrate

    name = unique("vbapi_bench")
    await SERVICES.create_database(name)
    try:
        dsn = SERVICES.dsn_for(name)
        if migrated:
            await migrate(dsn)
        yield dsn
    finally:
        await SERVICES.drop_database(name)


async def seed_database(dsn: str) -> None:
    """The parent records the benchmark's items point at (bench.data), in the database at
    ``dsn``."""
    conn = await asyncpg.connect(dsn)
    try:
        await seed_parents(conn)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def own_services() -> AsyncIterator[tuple[str, str]]:
    """A vhost (its URL) and a database with the items' parents in it (its DSN), both
    this measurement's own."""
    with own_vhost() as vhost:
        async with own_database() as dsn:
            await seed_database(dsn)
            yield amqp_url(vhost), dsn


def worker_config(path: Path, url: str, dsn: str, **sections: dict[str, Any]) -> Path:
    """A TOML file for the real worker: the bench's vhost and database, otherwise defaults
    (metrics off, since several workers may run at once), but for ``sections``."""
    defaults = {"amqp": {"url": url}, "databases": {"bench": {"dsn": dsn}},
                "metrics": {"port": 0}, "log": {"format": "json"}}
    return write_toml(path, merged(defaults, sections))


class Process:
    """A child process the benchmark started (the worker, or a peer consumer)."""

    def __init__(self, args: list[str], log_path: Path,
                 env: dict[str, str] | None = None) -> None:
        self._log = log_path.open("wb")
        self.popen = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                      start_new_session=True,
                                      env={**os.environ, **(env or {})})
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def reset_peak_memory(self) -> bool:
        """Reset the kernel's peak-RSS mark (VmHWM) so the next reading is this phase's."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def memory_kib(self) -> tuple[int, int]:
        """(current RSS, peak RSS since start or the last reset), in KiB."""
        rss = hwm = 0
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
        except OSError:
            pass
        return rss, hwm

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (the worker drains and exits 0), then SIGKILL if it will not go."""
        try:
            if self.alive():
                self.popen.send_signal(signal.SIGTERM)
                try:
                    self.popen.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    self.popen.kill()
                    self.popen.wait(5)
        finally:
            self._log.close()
        return self.popen.returncode


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


async def wait_for_log(path: Path, needle: bytes, process: Process,
                       timeout_s: float = 60.0) -> None:
    """Wait until the child logged ``needle`` (e.g. the worker's "consuming" line)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = _read(path)
        if needle in text:
            return
        if not process.alive():
            raise RuntimeError(f"{path.name} exited early:\n{text[-2000:].decode()}")
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{path.name} did not log {needle!r} within {timeout_s} s")


def _read(path: Path) -> bytes:
    # A small local log file: reading it does not stall the event loop noticeably.
    return path.read_bytes()
