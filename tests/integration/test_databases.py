"""Many logical databases: each has its own pool, opened on first use, and a batch only
ever touches the database it names; a database name is never more than a name (in SQL, in
metrics labels)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from urllib.parse import quote

import asyncpg
import pytest
from prometheus_client import REGISTRY

from schemas import ddl
from tests.support import samples
from tests.support.configs import make_settings
from tests.support.databases import isolated_database
from tests.support.producer import Producer
from tests.support.running import running
from tests.support.services import SERVICES, amqp_url, dsn_for
from tests.support.waiting import wait_until
from worker.metrics import item_status_label
from worker.service import Worker
from worker.store.catalog import connect_creating
from worker.store.migrations import migrate


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


async def test_a_missing_database_is_created_whatever_its_name() -> None:
    """Upper case, a dash, a double quote: the name is quoted as an identifier."""
    name = f'vbapi_Odd-"name"_{uuid.uuid4().hex[:8]}'
    try:
        conn = await connect_creating(dsn_for(quote(name, safe="")))
        try:
            assert await conn.fetchval("SELECT current_database()") == name
        finally:
            await conn.close()
    finally:
        async with SERVICES.admin() as admin:
            await admin.execute(f"DROP DATABASE IF EXISTS {ddl.quote(name)} WITH (FORCE)")


def batches_counted(database: str) -> float:
    """upsert_batches_total of Benefit batches dead-lettered for ``database``."""
    return REGISTRY.get_sample_value("upsert_batches_total", {
        "entity": "Benefit", "database": database, "outcome": "dead_lettered"}) or 0.0


async def test_batches_for_unconfigured_databases_share_one_metrics_label(
        worker: Worker, producer: Producer) -> None:
    """40 made-up database names make no series of their own: they count as "unknown"."""
    names = {f"made-up-{uuid.uuid4().hex}" for _ in range(40)}
    before = batches_counted("unknown")
    replies = await asyncio.gather(*(
        producer.call(samples.BENEFIT_PATH, [samples.benefit()], database=name)
        for name in names))
    assert {r.status for r in replies} == {404}
    # Counted once acknowledged, just after the reply went.
    await wait_until(lambda: batches_counted("unknown") == before + 40)
    labels = {value for metric in REGISTRY.collect() for sample in metric.samples
              for value in sample.labels.values()}
    assert not labels & names
    # Item statuses likewise: only those the worker answers with (a recorded reply is
    # read back from the database).
    assert (item_status_label(201), item_status_label(299)) == ("201", "other")
