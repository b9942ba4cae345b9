"""The client library against the real broker and a running worker."""

from __future__ import annotations

import asyncio
import gzip
import re
import sys

import asyncpg
import orjson
import pytest
from aiormq.exceptions import ChannelNotFoundEntity

from tests.support import samples
from tests.support.paths import ROOT
from tests.support.services import amqp_url
from vbapi_upsert_client import (
    BrokerUnreachable,
    ItemResult,
    ItemsFailed,
    ProblemError,
    PropertyTooLong,
    Reply,
    SyncUpsertClient,
    UpsertClient,
    UpsertTimeout,
)
from worker.amqp.topology import REQUEST_EXCHANGE, declare_topology
from worker.service import Worker
from worker.settings import Settings


async def test_many_concurrent_batches_on_one_connection(vhost: str, worker: Worker,
                                                         db: asyncpg.Connection) -> None:
    async with UpsertClient(amqp_url(vhost), database="demo") as client:
        replies = await asyncio.gather(*(
            client.upsert(samples.ARMOR_PATH, [samples.armor(n)]) for n in range(1, 41)))
    assert [r.status for r in replies] == [207] * 40
    assert [r.items[0].id for r in replies] == [
        [{"key": "armorCodeExCode_Key", "value": n}] for n in range(1, 41)]
    assert all(r.items[0].status == 201 and r.activity_id for r in replies)
    assert await db.fetchval("SELECT count(*) FROM vbapi.armor_code_ex_code") == 40


async def test_upsert_many_keeps_the_order_of_the_input(vhost: str, worker: Worker,
                                                        db: asyncpg.Connection) -> None:
    items = [samples.armor(n) for n in range(1, 251)]
    items[77] = samples.armor(78, ex_Code="way too long for the column")
    async with UpsertClient(amqp_url(vhost), database="demo") as client:
        results = await client.upsert_many(samples.ARMOR_PATH, items, batch_size=20,
                                           message_id="many-1")
        again = await client.upsert_many(samples.ARMOR_PATH, items, batch_size=20,
                                          message_id="many-1")
    assert [r.id[0]["value"] for r in results] == list(range(1, 251))
    assert [r.status for r in results].count(201) == 249
    assert results[77].status == 400 and results[77].body.startswith("ex_Code:")
    assert again == results  # the same message ids: answered from the records
    assert await db.fetchval("SELECT count(*) FROM vbapi.armor_code_ex_code") == 249


async def test_a_timeout_says_the_batch_is_queued(vhost: str, settings: object) -> None:
    from worker.cli.publishing import publish_batch

    # No worker runs: the batch is confirmed and waits in the queue.
    with pytest.raises(UpsertTimeout, match="confirmed by the broker and stays queued") as e:
        await publish_batch(settings.amqp, settings.retry,  # type: ignore[attr-defined]
                            database="demo",
                            path=samples.ARMOR_PATH, body=b"[]", message_id="late-1",
                            timeout_s=0.5)
    assert e.value.message_id == "late-1"
    # Without a message id of the caller's, the timeout names the one the client chose.
    with pytest.raises(UpsertTimeout) as chosen:
        await publish_batch(settings.amqp, settings.retry,  # type: ignore[attr-defined]
                            database="demo",
                            path=samples.ARMOR_PATH, body=b"[]", timeout_s=0.5)
    assert chosen.value.message_id and chosen.value.message_id in str(chosen.value)


async def test_a_message_id_too_long_for_amqp_is_refused_before_publishing(
        vhost: str, settings: Settings) -> None:
    """AMQP carries a message_id in at most 255 UTF-8 bytes: a longer one is the caller's
    mistake, said as such (a ValueError naming it), not as an encoding error of pamqp."""
    async with UpsertClient(amqp_url(vhost), database="demo") as client:
        with pytest.raises(PropertyTooLong, match="message_id is 256 bytes long") as e:
            await client.send(samples.ARMOR_PATH, [], message_id="é" * 128)
        assert isinstance(e.value, ValueError) and e.value.name == "message_id"
        with pytest.raises(ValueError, match="correlation_id is 300 bytes"):
            await client.upsert(samples.ARMOR_PATH, [], correlation_id="c" * 300)
        # Nothing was sent, and the client still works: 255 bytes fit.
        assert client.connection is not None
        await declare_topology(await client.connection.channel(), settings.retry.delays_s)
        with pytest.raises(UpsertTimeout):  # no worker runs: the batch waits, confirmed
            await client.upsert(samples.ARMOR_PATH, [], message_id="m" * 255, timeout_s=0.3)


async def test_large_bodies_are_sent_gzip_compressed(vhost: str, worker: Worker,
                                                     db: asyncpg.Connection) -> None:
    items = [samples.armor(n, armor_Code="A" * 8) for n in range(1, 3001)]
    async with UpsertClient(amqp_url(vhost), database="demo", gzip_min_bytes=1024,
                            replies="private") as client:
        # A copy of what goes over the wire, from the request exchange.
        wiretap = await client.channel.declare_queue(exclusive=True)
        await wiretap.bind(REQUEST_EXCHANGE, routing_key="ArmorCodeExCode")
        small = await client.upsert(samples.ARMOR_PATH, [samples.armor(9000)])
        large = await client.upsert(samples.ARMOR_PATH, items)
        sent = [await wiretap.get(timeout=5), await wiretap.get(timeout=5)]
    assert [m.content_encoding for m in sent] == [None, "gzip"]
    assert orjson.loads(gzip.decompress(sent[1].body)) == items
    assert small.items[0].status == 201
    assert large.status == 207 and {r.status for r in large.items} == {201}
    assert await db.fetchval("SELECT count(*) FROM vbapi.armor_code_ex_code") == 3001


async def test_whole_message_errors_and_failed_items_raise_on_request(
        vhost: str, worker: Worker) -> None:
    async with UpsertClient(amqp_url(vhost), database="demo") as client:
        unknown = await client.upsert("/no-such-batch", [{}])
        bad_item = await client.upsert(samples.ARMOR_PATH, [samples.armor(1), {}])
        no_database = await client.upsert(samples.ARMOR_PATH, [], database="nope")
    assert unknown.status == 404 and unknown.items == []
    assert unknown.problem is not None and unknown.problem.instance == "/no-such-batch"
    with pytest.raises(ProblemError, match="404"):
        unknown.raise_for_status()
    assert no_database.problem is not None and no_database.problem.status == 404
    with pytest.raises(ItemsFailed, match="1 items failed: item 1: 400"):
        bad_item.raise_for_status()


async def test_the_synchronous_client(vhost: str, worker: Worker) -> None:
    def script() -> tuple[Reply, list[ItemResult]]:
        with SyncUpsertClient(amqp_url(vhost), database="demo") as client:
            reply = client.upsert(samples.ARMOR_PATH, [samples.armor(5)]).raise_for_status()
            return reply, client.upsert_many(samples.ARMOR_PATH,
                                             [samples.armor(6), samples.armor(5)], batch_size=1)

    # The script runs in a thread of its own, as a script would, while the worker runs here.
    reply, results = await asyncio.to_thread(script)
    assert reply.items[0].status == 201
    assert [r.status for r in results] == [201, 200]


async def test_the_channel_is_opened_again_after_the_broker_closed_it(
        vhost: str, settings: Settings) -> None:
    async with UpsertClient(amqp_url(vhost), database="demo", timeout_s=0.5) as client:
        # No worker ever ran here: no exchange yet, and the broker closes the channel.
        with pytest.raises(ChannelNotFoundEntity):
            await client.upsert(samples.ARMOR_PATH, [])
        channel = await client.connection.channel()  # type: ignore[union-attr]
        await declare_topology(channel, settings.retry.delays_s)
        with pytest.raises(UpsertTimeout):  # confirmed and queued now: no worker to answer
            await client.upsert(samples.ARMOR_PATH, [])


async def test_the_client_readme_runs_as_written(vhost: str, worker: Worker) -> None:
    """client/README.md's producer and its script without async, run as written (against
    this test's broker), each in a Python of its own."""
    text = (ROOT / "client" / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 2 and "asyncio.run(main())" in blocks[0]
    outputs = []
    for block in blocks:
        code = block.replace("amqp://guest:guest@127.0.0.1:5672/%2F", amqp_url(vhost))
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 0, err.decode()
        outputs.append(out.decode())
    assert outputs[0].startswith("201 [{'key': 'armorCodeExCode_Key', 'value': 1}] Created")
    assert outputs[1] == "201\n"


async def test_no_node_answers() -> None:
    client = UpsertClient(["amqp://guest:guest@127.0.0.1:1/", "amqp://guest:guest@127.0.0.1:2/"],
                          timeout_s=5)
    with pytest.raises(BrokerUnreachable, match=r"127\.0\.0\.1:1: .*127\.0\.0\.1:2: "):
        await client.open()
