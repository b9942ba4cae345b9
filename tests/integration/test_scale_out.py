"""Scale-out in practice: two ``python -m worker run`` processes on one queue."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import asyncpg
import orjson

from tests.support.configs import make_settings, write_settings
from tests.support.operations_support import status_of
from tests.support.producer import Replies
from tests.support.samples import benefit
from tests.support.services import amqp_url
from worker.amqp.topology import REQUEST_QUEUE

BATCHES = 300
KEYS = 20


def keys_of(batch: int) -> list[int]:
    """Three overlapping keys per batch, so both workers write the same rows."""
    return sorted({batch % KEYS, (batch + 7) % KEYS, (batch + 13) % KEYS})


@contextlib.contextmanager
def workers(config: Path, logs: list[Path]) -> Iterator[list[subprocess.Popen[bytes]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPSERT_")}
    started: list[subprocess.Popen[bytes]] = []
    try:
        for log in logs:
            with log.open("wb") as stderr:
                started.append(subprocess.Popen(
                    [sys.executable, "-m", "worker", "run", "--config", str(config)],
                    stdout=subprocess.DEVNULL, stderr=stderr, env=env))
        yield started
    finally:
        for process in started:  # only our own processes, by their PIDs
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


async def consumers_on_requests(url: str) -> int:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(REQUEST_QUEUE, passive=True)
        result = queue.declaration_result
        return int(result.consumer_count or 0)


async def test_two_worker_processes_share_one_queue(vhost: str, dsn: str, db: asyncpg.Connection,
                                                    tmp_path: Path) -> None:
    url = amqp_url(vhost)
    # A line for every batch: the test counts them.
    settings = make_settings(vhost, {"demo": {"dsn": dsn}},
                             log={"level": "info", "clean_batch_lines_per_s": 0})
    config = write_settings(tmp_path / "worker.toml", settings)
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    with workers(config, logs) as processes:
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            with contextlib.suppress(aio_pika.exceptions.ChannelNotFoundEntity):
                if await consumers_on_requests(url) == 2:
                    break
            assert all(p.poll() is None for p in processes), "a worker exited early"
            assert asyncio.get_running_loop().time() < deadline, "workers did not start"
            await asyncio.sleep(0.1)

        base = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
        async with Replies(url) as replies:
            sent = [await replies.send(
                "/benefits-batch",
                [benefit(f"K{k}", benefit_Description=f"batch {i}") for k in keys_of(i)],
                database="demo", timestamp=base + dt.timedelta(seconds=i))
                for i in range(BATCHES)]
            for message_id in sent:
                await replies.wait_for(message_id, timeout_s=60)
            await asyncio.sleep(0.5)  # room for a duplicate answer to show up
            answered = [m.correlation_id for m in replies.messages]
            assert sorted(answered) == sorted(sent)  # every batch answered exactly once
            assert {status_of(m) for m in replies.messages} == {207}
            statuses = {item["status"] for m in replies.messages
                        for item in orjson.loads(m.body)["data"]}
            assert statuses <= {200, 201, 409}

        for process in processes:
            process.send_signal(signal.SIGTERM)
        codes = [await asyncio.to_thread(p.wait, 30) for p in processes]
        assert codes == [0, 0]

    # Writes are ordered by batch timestamp: each key holds its latest batch's value.
    rows = dict(await db.fetch("SELECT benefit_code, benefit_description FROM vbapi.benefit"))
    latest = {f"K{k}": f"batch {max(i for i in range(BATCHES) if k in keys_of(i))}"
              for k in range(KEYS)}
    assert rows == latest

    summaries = []
    for log in logs:
        lines = [orjson.loads(line) for line in log.read_bytes().splitlines() if line.strip()]
        mine = [line for line in lines if line.get("event") == "batch answered"]
        assert mine, f"{log.name} answered no batch"  # both workers took a share
        summaries += mine
        assert "batch 1" not in log.read_text()  # item payloads are never logged
    assert len(summaries) == BATCHES
    line = summaries[0]
    assert {"activity_id", "message_id", "correlation_id", "database", "entity", "statuses",
            "items", "duration_ms", "status", "timestamp", "level"} <= set(line)
    assert line["database"] == "demo" and line["entity"] == "Benefit"
