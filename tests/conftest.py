"""Fixtures: each test gets its own vhost and its own database on the real services.
The helpers they are made of live in the support modules (tests/services.py, ...)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from tests.support.configs import make_settings
from tests.support.databases import drop_pooled_databases, isolated_database
from tests.support.producer import Producer
from tests.support.running import running
from tests.support.services import amqp_url, isolated_vhost, rabbitmqctl
from worker.service import Worker
from worker.settings import Settings


@pytest.fixture(scope="session", autouse=True)
def pooled_databases() -> Iterator[None]:
    """Drop the reused test databases once the run is over."""
    yield
    asyncio.run(drop_pooled_databases())


@pytest.fixture
def vhost() -> Iterator[str]:
    with isolated_vhost() as name:
        yield name


@pytest.fixture
async def dsn() -> AsyncIterator[str]:
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
def producer_user(vhost: str) -> Iterator[tuple[str, str]]:
    """A real broker user (name, password) for a producer, allowed on the test's vhost only,
    deleted afterwards.  Short: the name is stored in entry_User/update_User (<= 20)."""
    name, password = f"acme-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    rabbitmqctl("add_user", name, password)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, name, ".*", ".*", ".*")
        yield name, password
    finally:
        rabbitmqctl("delete_user", name)
