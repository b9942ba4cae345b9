"""The benchmark's own corner of the local services: a vhost and databases it made, and the
worker processes it started.  Everything is removed again, and nothing else is touched."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote

import asyncpg

AMQP_HOST = os.environ.get("BENCH_AMQP_HOST", "127.0.0.1")
AMQP_PORT = int(os.environ.get("BENCH_AMQP_PORT", "5672"))
AMQP_USER = os.environ.get("BENCH_AMQP_USER", "guest")
AMQP_PASSWORD = os.environ.get("BENCH_AMQP_PASSWORD", "guest")
PG_ADMIN_DSN = os.environ.get("BENCH_PG_DSN", "postgresql://root@127.0.0.1:5432/postgres")


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def amqp_url(vhost: str) -> str:
    return (f"amqp://{AMQP_USER}:{AMQP_PASSWORD}@{AMQP_HOST}:{AMQP_PORT}/"
            f"{quote(vhost, safe='')}")


def dsn_for(database: str) -> str:
    base, _, _ = PG_ADMIN_DSN.rpartition("/")
    return f"{base}/{database}"


@contextlib.contextmanager
def own_vhost() -> Iterator[str]:
    """A fresh vhost for one measurement, deleted afterwards."""
    vhost = unique("bench")
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, AMQP_USER, ".*", ".*", ".*")
        yield vhost
    finally:
        _rabbitmqctl("delete_vhost", vhost)


@contextlib.asynccontextmanager
async def own_database() -> AsyncIterator[str]:
    """A fresh, migrated PostgreSQL database (its DSN), dropped afterwards."""
    from worker.migrations import migrate

    name = unique("vbapi_bench")
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        dsn = dsn_for(name)
        await migrate(dsn)
        yield dsn
    finally:
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def worker_config(path: Path, url: str, dsn: str, extra: str = "") -> Path:
    """A TOML file for the real worker: the bench's vhost and database, otherwise defaults
    (metrics off, since several workers may run at once)."""
    path.write_text(
        f'[amqp]\nurl = "{url}"\n\n'
        f'[databases.bench]\ndsn = "{dsn}"\n\n'
        f"[metrics]\nport = 0\n\n"
        f'[log]\nformat = "json"\n'
        f"{extra}")
    return path


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
