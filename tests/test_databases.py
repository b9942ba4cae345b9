"""Many logical databases: each has its own pool, opened on first use, and a batch only
ever touches the database it names."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests import samples
from tests.configs import make_settings
from tests.databases import isolated_database
from tests.producer import Producer
from tests.running import running
from tests.services import amqp_url
from worker.migrations import migrate


@pytest.fixture
async def second_dsn() -> AsyncIterator[str]:
    async with isolated_database() as dsn:
        await migrate(dsn)
        yield dsn


async def test_batches_touch_only_the_database_they_name(vhost: str, dsn: str,
                                                         second_dsn: str) -> None:
    settings = make_settings(vhost, {"east": {"dsn": dsn}, "west": {"dsn": second_dsn},
                                     "unused": {"dsn": "postgresql://127.0.0.1:1/none"}})
    async with running(settings) as worker, Producer(amqp_url(vhost)) as producer:
        assert worker.processor.databases.open_pools() == {}  # pools open on first use
        east = await producer.call(samples.ARMOR_PATH, [samples.armor(1)], database="east")
        assert list(worker.processor.databases.open_pools()) == ["east"]
        west = await producer.call(samples.ARMOR_PATH, [samples.armor(1), samples.armor(2)],
                                   database="west")
        assert sorted(worker.processor.databases.open_pools()) == ["east", "west"]
    assert [d["status"] for d in east.body["data"]] == [201]
    assert [d["status"] for d in west.body["data"]] == [201, 201]
    for target, expected in ((dsn, 1), (second_dsn, 2)):
        conn = await asyncpg.connect(target)
        try:
            assert await conn.fetchval("SELECT count(*) FROM vbapi.armor_code_ex_code") == expected
        finally:
            await conn.close()
