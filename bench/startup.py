"""What 730 entities cost before the first batch: the first migration of an empty database,
the worker's start to ready (/readyz) on a migrated one, and its memory when idle."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from bench.services import (
    Process,
    amqp_url,
    own_database,
    own_vhost,
    python_module,
    worker_config,
)
from tests.support.services import free_port

# Idle for this long after ready before memory is read: what a worker holds waiting.
IDLE_S = 5.0


@dataclass
class Startup:
    first_migration_s: float
    start_to_ready_s: float
    idle_mb: float


async def _ready(port: int) -> bool:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    try:
        writer.write(b"GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        status = await reader.readline()
        return b" 200 " in status
    finally:
        writer.close()


async def measure_startup(workdir: Path) -> Startup:
    from worker.store.migrations import migrate

    async with own_database(migrated=False) as dsn:
        started = time.perf_counter()
        await migrate(dsn)
        first_migration_s = time.perf_counter() - started
        with own_vhost() as vhost:
            port = free_port()
            config = worker_config(workdir / "startup.toml", amqp_url(vhost), dsn,
                                   metrics={"port": port})
            started = time.perf_counter()
            process = Process(python_module("worker", "run", "--config", str(config)),
                              workdir / "startup.log")
            try:
                while not await _ready(port):
                    if not process.alive() or time.perf_counter() - started > 60:
                        raise RuntimeError("the worker did not become ready; see startup.log")
                    await asyncio.sleep(0.02)
                start_to_ready_s = time.perf_counter() - started
                await asyncio.sleep(IDLE_S)
                idle_mb = process.memory_kib()[0] / 1024
            finally:
                process.stop()
    return Startup(first_migration_s, start_to_ready_s, idle_mb)
