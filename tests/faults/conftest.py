"""Fixtures of the fault tests: worker subprocesses that are always reaped, the test's
own broker connection, and the clusters a fault test kills nodes of: three RabbitMQ
nodes, and a PostgreSQL primary with its synchronous standby.  Each test still has its
own vhost and database on the session's services, as in the integration tier (tests/
support/fixtures.py).  The clusters need the server binaries of this machine: without them
a test skips, or in CI fails (tests/support/faults/required.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.faults.broker import TestBroker
from tests.support.faults.cluster import RabbitCluster, rabbit_cluster
from tests.support.faults.pg_pair import PgPair, pg_pair
from tests.support.faults.processes import Spawn, WorkerProcess, write_config
from tests.support.services import Services, amqp_url


@pytest.fixture(scope="session", autouse=True)
def session_services(services: Services, pooled_databases: None) -> Services:
    """The services chosen before the first test, the reused databases dropped after the
    last (shared with the integration tier when both run)."""
    return services


@pytest.fixture
def spawn(tmp_path: Path, vhost: str) -> Iterator[Spawn]:
    """``spawn(dsn, database={...}, **sections)`` -> a started worker process with that
    configuration.

    Every process spawned is killed at teardown if still alive, and its log is printed
    (pytest shows it only when the test failed).
    """
    started: list[WorkerProcess] = []

    def start(dsn: str, database: dict[str, Any] | None = None,
              **sections: dict[str, Any]) -> WorkerProcess:
        n = len(started)
        config = write_config(tmp_path / f"worker{n}.toml", amqp_url=amqp_url(vhost), dsn=dsn,
                              database=database, **sections)
        process = WorkerProcess(config, tmp_path / f"worker{n}.log").start()
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            process.stop()
        for n, process in enumerate(started):
            print(f"--- worker {n} (pid {process.proc.pid if process.proc else '-'}) log tail")
            print(process.tail())


@pytest.fixture
async def broker_for(vhost: str) -> AsyncIterator[Callable[[list[float]], Any]]:
    """``await broker_for(retry_delays_s)`` -> the test's TestBroker, closed at teardown."""
    opened: list[TestBroker] = []

    async def open_broker(retry_delays_s: list[float]) -> TestBroker:
        broker = await TestBroker(amqp_url(vhost), vhost, retry_delays_s).__aenter__()
        opened.append(broker)
        return broker

    try:
        yield open_broker
    finally:
        for broker in opened:
            await broker.__aexit__(None, None, None)


@pytest.fixture(scope="module")
def broker_cluster() -> Iterator[RabbitCluster]:
    """Three RabbitMQ nodes clustered, for the tests of one module (about 20 s to start,
    so not one a test).  A test that kills a node restarts it and waits for
    ``wait_healthy()`` before it ends, so that the next finds three nodes running."""
    with rabbit_cluster() as cluster:
        yield cluster


@pytest.fixture
def db_pair() -> Iterator[PgPair]:
    """A PostgreSQL primary and its synchronous standby (about 3 s to start): a test's
    own, since a failover cannot be undone."""
    with pg_pair() as pair:
        yield pair
