"""The fixtures of the tiers that use services (tests/integration, tests/faults): each test
gets its own vhost and its own database on the session's services.  A plugin (tests/
conftest.py loads it), so that both tiers share one session: the services are chosen, and
containers started if need be, once.  The tiers' conftests make ``services`` and
``pooled_databases`` autouse; tests/unit/conftest.py refuses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from tests.support.configs import make_settings
from tests.support.databases import drop_pooled_databases, isolated_database
from tests.support.producer import Producer
from tests.support.running import running
from tests.support.services import SERVICES, Services, amqp_url, isolated_vhost
from tests.support.sources import ServicesUnavailable, session_services
from worker.service import Worker
from worker.settings import Settings


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    """The session's PostgreSQL and RabbitMQ: the settings', the local ones, or containers
    (tests/support/sources.py).  Stops the run if there are none."""
    with contextlib.ExitStack() as stack:
        try:
            chosen = stack.enter_context(session_services(SERVICES))
        except ServicesUnavailable as e:
            pytest.exit(f"no services for the tests that need them: {e}", returncode=1)
        for source in chosen:
            print(f"{source.service}: {source.origin} ({source.reason})")
        yield SERVICES


@pytest.fixture(scope="session")
def pooled_databases(services: Services) -> Iterator[None]:
    """Drop the reused test databases once the run is over."""
    yield
    asyncio.run(drop_pooled_databases())


@pytest.fixture
def vhost(services: Services) -> Iterator[str]:
    with isolated_vhost() as name:
        yield name


@pytest.fixture
async def dsn(services: Services) -> AsyncIterator[str]:
    async with isolated_database(migrated=True) as value:
        yield value


@pytest.fixture
async def db(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the test's database, for arranging and checking rows."""
    conn = await asyncpg.connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def settings(vhost: str, dsn: str) -> Settings:
    return make_settings(vhost, {"demo": {"dsn": dsn}})


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[Worker]:
    async with running(settings) as value:
        yield value


@pytest.fixture
async def producer(vhost: str) -> AsyncIterator[Producer]:
    async with Producer(amqp_url(vhost)) as value:
        yield value


@pytest.fixture
def producer_user(vhost: str, services: Services) -> Iterator[tuple[str, str]]:
    """A real broker user (name, password) for a producer, allowed on the test's vhost only,
    deleted afterwards.  Short: the name is stored in entry_User/update_User (<= 20)."""
    name, password = f"acme-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    broker = services.broker
    broker.add_user(name, password)
    try:
        broker.set_permissions(vhost, name)
        yield name, password
    finally:
        broker.delete_user(name)
