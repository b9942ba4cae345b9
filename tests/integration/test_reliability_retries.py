"""Issue 3, items 1 to 3: what each failure means for the message.  Transient failures go
through the delay queues while other batches flow, then 503 and a dead letter; a database
that comes back lands the batch; a message that crashes the worker is dead-lettered after
a bounded number of tries; dead letters keep the message as it was sent."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import aio_pika
import asyncpg
import orjson
import pytest
from prometheus_client import REGISTRY

from tests.support import samples
from tests.support.configs import make_settings
from tests.support.databases import isolated_database
from tests.support.producer import Producer
from tests.support.reliability_support import (
    TcpProxy,
    broker_channel,
    queue_depth,
    take_dead_letters,
)
from tests.support.running import consuming
from tests.support.services import SERVICES, amqp_url, free_port
from tests.support.waiting import wait_until
from worker.amqp.topology import REQUEST_QUEUE, declare_topology, retry_queue_name
from worker.core import errors
from worker.core.request import Request
from worker.processor import Answer, Processor
from worker.service import Worker
from worker.settings import Settings
from worker.store import failures

# -- item 1: one place decides, by SQLSTATE and exception type ----------------------------

TRANSIENT_SQLSTATES = ["40001", "40P01", "57P01", "57P02", "57P03", "53300", "08006",
                       "55P03", "57014"]
PERMANENT_SQLSTATES = ["21000", "22001", "22003", "22P02", "23502", "23503", "23505",
                       "23514", "42P01", "P0001"]


async def raised_by(db: asyncpg.Connection, sqlstate: str) -> asyncpg.PostgresError:
    """The exception asyncpg raises for a real server error with this SQLSTATE."""
    with pytest.raises(asyncpg.PostgresError) as raised:
        await db.execute(f"DO $$ BEGIN RAISE EXCEPTION 'injected {sqlstate}' "
                         f"USING ERRCODE = '{sqlstate}'; END $$")
    assert raised.value.sqlstate == sqlstate
    return raised.value


async def test_failures_are_classified_by_sqlstate_and_type(dsn: str,
                                                            db: asyncpg.Connection) -> None:
    for sqlstate in TRANSIENT_SQLSTATES:
        exc = await raised_by(db, sqlstate)
        assert isinstance(failures.classify_database_error(exc), errors.TransientFailure), sqlstate
        assert not failures.is_item_error(exc)
        assert failures.is_conflict(exc) == (sqlstate in ("40001", "40P01"))
    for sqlstate in PERMANENT_SQLSTATES:
        exc = await raised_by(db, sqlstate)
        assert failures.classify_database_error(exc) is None, sqlstate
        assert failures.is_item_error(exc) and not failures.is_conflict(exc)

    # Unreachable: nothing listens on the port.
    with pytest.raises(OSError) as refused:
        await asyncpg.connect(f"postgresql://root@127.0.0.1:{free_port()}/x", timeout=5)
    assert isinstance(failures.classify_database_error(refused.value), errors.TransientFailure)
    # The connection lost mid-batch: the server ends our backend.
    victim = await asyncpg.connect(dsn)
    await db.execute("SELECT pg_terminate_backend($1)", victim.get_server_pid())
    # (asyncpg reports this in different ways, depending on when it reads the server's
    # goodbye: AdminShutdownError, ConnectionDoesNotExistError, InternalClientError.)
    with pytest.raises(Exception) as lost:
        await victim.execute("SELECT 1")
    assert isinstance(failures.classify_database_error(lost.value), errors.TransientFailure)
    await victim.close()
    with pytest.raises(asyncpg.InterfaceError) as closed:
        await victim.execute("SELECT 1")
    assert isinstance(failures.classify_database_error(closed.value), errors.TransientFailure)
    # Misuse (a bug): neither worth a retry nor one item's fault.  (On a connection of
    # its own: asyncpg may leave it unusable.)
    misused = await asyncpg.connect(dsn)
    try:
        with pytest.raises(asyncpg.InterfaceError) as misuse:
            await misused.fetch("SELECT $1::integer")
    finally:
        misused.terminate()
    assert failures.classify_database_error(misuse.value) is None
    assert not failures.is_item_error(misuse.value)
    # A value the driver cannot encode: permanent, and one item's fault.
    with pytest.raises(asyncpg.DataError) as encoding:
        await db.fetchval("SELECT $1::integer", "not a number")
    assert failures.classify_database_error(encoding.value) is None
    assert failures.is_item_error(encoding.value)


# -- item 2: retries through the delay queues ---------------------------------------------

SENT_PROPERTIES: dict[str, Any] = {
    "content_type": "application/json; charset=utf-8", "type": "upsert", "app_id": "loader",
    "priority": 3, "correlation_id": "corr-1", "headers": {"trace": "t-1"},
}


def assert_unchanged(dead: aio_pika.abc.AbstractIncomingMessage, body: bytes,
                     message_id: str, reply_to: str, timestamp: dt.datetime) -> None:
    """A dead letter keeps body, headers and properties as sent."""
    assert dead.body == body
    assert dead.message_id == message_id and dead.reply_to == reply_to
    assert dead.timestamp == timestamp.replace(tzinfo=None) or dead.timestamp == timestamp
    for name in ("content_type", "type", "app_id", "priority", "correlation_id"):
        assert getattr(dead, name) == SENT_PROPERTIES[name], name
    assert dead.headers["trace"] == "t-1"
    assert dead.headers["path"] == samples.BENEFIT_PATH
    assert "x-delivery-count" not in dead.headers
    assert dead.delivery_mode == aio_pika.DeliveryMode.PERSISTENT


async def test_transient_failure_goes_through_delay_queues_then_503_and_dead_letter(
        vhost: str, dsn: str, producer: Producer) -> None:
    settings = make_settings(vhost, {
        "demo": {"dsn": dsn},
        # nothing listens there: connection refused, every time
        "down": {"dsn": f"postgresql://root@127.0.0.1:{free_port()}/nowhere"},
    }, retry={"delays_s": [0.5, 1.0], "max_deliveries": 3})
    body = orjson.dumps([samples.benefit("B1")])
    timestamp = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.UTC)
    async with consuming(Worker(settings)):
        stuck = await producer.send(samples.BENEFIT_PATH, body=body, database="down",
                                    message_id="r-1", timestamp=timestamp,
                                    **{**SENT_PROPERTIES, "headers": {"trace": "t-1"}})
        # The batch waits in the first delay queue, then in the second ...
        seen = [await wait_until(lambda d=d: queue_depth(vhost, retry_queue_name(d)),  # type: ignore[misc]
                                 timeout_s=10, interval_s=0.02) for d in (0.5, 1.0)]
        # ... while batches for the healthy database keep flowing.
        quick = [await producer.call(samples.BENEFIT_PATH, [samples.benefit(f"Q{i}")])
                 for i in range(5)]
        assert not producer._replies[stuck].done()
        final = await producer.reply(stuck, timeout_s=20)
    assert seen == [1, 1]
    assert all(r.body["data"][0]["status"] == 201 for r in quick)
    assert final.status == 503
    error = final.body["error"]
    assert error["title"] == "Service Unavailable" and error["status"] == 503
    assert "database unreachable" in error["detail"] and "(after 3 attempts)" in error["detail"]
    assert final.properties.correlation_id == "corr-1"

    (dead,) = await take_dead_letters(vhost)
    assert_unchanged(dead, body, "r-1", producer.reply_queue.name, timestamp)
    assert dead.headers["x-upsert-error-status"] == 503
    assert dead.headers["x-upsert-attempts"] == 3
    assert dead.headers["x-upsert-error-title"] == "Service Unavailable"
    assert "(after 3 attempts)" in dead.headers["x-upsert-error-detail"]
    assert dead.headers["x-upsert-activity-id"] == final.headers["activity-id"]
    dt.datetime.fromisoformat(dead.headers["x-upsert-dead-lettered-at"])
    assert await queue_depth(vhost, REQUEST_QUEUE) == 0


async def test_a_database_that_comes_back_during_the_retries_gets_the_batch(
        vhost: str, producer: Producer) -> None:
    upstream_port = int(SERVICES.pg_dsn.split("@", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    proxy = TcpProxy(upstream_port)
    async with isolated_database() as real_dsn:
        database = real_dsn.rsplit("/", 1)[1]
        # Down at start: not even migrated.  The worker migrates it before the first
        # batch once it answers.
        settings = make_settings(vhost, {"late": {
            "dsn": f"postgresql://root@127.0.0.1:{proxy.port}/{database}"}},
            retry={"delays_s": [0.5, 1.0, 2.0], "max_deliveries": 3})
        try:
            async with consuming(Worker(settings)):
                sent = await producer.send(samples.ARMOR_PATH, [samples.armor(7)],
                                           database="late", message_id="late-1")
                await wait_until(lambda: queue_depth(vhost, retry_queue_name(0.5)),
                                 timeout_s=10, interval_s=0.02)
                await proxy.start()
                reply = await producer.reply(sent, timeout_s=15)
        finally:
            await proxy.stop()
        assert reply.status == 207
        assert reply.body["data"][0]["status"] == 201
        db = await asyncpg.connect(real_dsn)
        try:
            assert await db.fetchval("SELECT upsert_message_id FROM "
                                     "vbapi.armor_code_ex_code") == "late-1"
        finally:
            await db.close()


async def test_a_failure_that_outlasts_the_in_place_retries_takes_the_delay_queues(
        vhost: str, dsn: str, db: asyncpg.Connection, producer: Producer) -> None:
    """Serialization failures on every try: a few quick tries in place per delivery, then
    the delay queues, then 503."""
    await db.execute("""
        CREATE FUNCTION vbapi.always_fail() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '40001'; END $$;
        CREATE TRIGGER always_fail BEFORE INSERT ON vbapi.armor_code_ex_code
            FOR EACH STATEMENT EXECUTE FUNCTION vbapi.always_fail();
    """)
    settings = make_settings(vhost, {"demo": {"dsn": dsn}}, retry={"delays_s": [0.2]})
    before = REGISTRY.get_sample_value("upsert_database_conflicts_total",
                                       {"sqlstate": "40001"}) or 0.0
    async with consuming(Worker(settings)):
        sent = await producer.send(samples.ARMOR_PATH, [samples.armor(1)])
        reply = await producer.reply(sent, timeout_s=20)
    assert reply.status == 503
    assert "database error 40001" in reply.body["error"]["detail"]
    assert "(after 2 attempts)" in reply.body["error"]["detail"]
    # Two deliveries, each tried four times in place (three retries).
    assert REGISTRY.get_sample_value("upsert_database_conflicts_total",
                                     {"sqlstate": "40001"}) == before + 6
    (dead,) = await take_dead_letters(vhost)
    assert dead.headers["x-upsert-error-status"] == 503


# -- item 3: poison messages ------------------------------------------------------------

class Broken(Processor):
    """A bug: every batch makes the worker raise."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.calls = 0

    async def process(self, request: Request, received_at: dt.datetime,
                      activity_id: str) -> Answer:
        self.calls += 1
        raise ZeroDivisionError("a bug")


async def test_a_message_that_makes_the_worker_raise_is_dead_lettered_after_bounded_tries(
        vhost: str, dsn: str, producer: Producer) -> None:
    settings = make_settings(vhost, {"demo": {"dsn": dsn}},
                             retry={"delays_s": [0.1, 0.2], "max_deliveries": 3})
    processor = Broken(settings)
    body = orjson.dumps([samples.benefit("B1")])
    timestamp = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.UTC)
    async with consuming(Worker(settings, processor=processor)):
        reply = await producer.call(samples.BENEFIT_PATH, body=body, message_id="bug-1",
                                    timestamp=timestamp,
                                    **{**SENT_PROPERTIES, "headers": {"trace": "t-1"}})
        await asyncio.sleep(0.5)  # nothing more comes of it
    assert processor.calls == 3
    assert reply.status == 500
    assert reply.body["error"]["detail"] == \
        "unexpected failure: ZeroDivisionError (after 3 attempts)"
    (dead,) = await take_dead_letters(vhost)
    assert_unchanged(dead, body, "bug-1", producer.reply_queue.name, timestamp)
    assert dead.headers["x-upsert-error-status"] == 500
    assert dead.headers["x-upsert-attempts"] == 3
    assert await queue_depth(vhost, REQUEST_QUEUE) == 0


async def test_a_message_that_keeps_killing_its_consumer_is_dead_lettered(
        vhost: str, settings: Settings, producer: Producer, db: asyncpg.Connection) -> None:
    """Each crash is played by a consumer that takes the message and dies without an ack;
    the quorum queue counts the deliveries (x-delivery-count)."""
    async with broker_channel(vhost) as channel:
        await declare_topology(channel, settings.retry.delays_s)
    sent = await producer.send(samples.BENEFIT_PATH, [samples.benefit("B1")],
                               message_id="poison-1")
    for crash in range(settings.retry.max_deliveries):
        connection = await aio_pika.connect(amqp_url(vhost))
        channel = await connection.channel()
        queue = await channel.declare_queue(REQUEST_QUEUE, passive=True)
        message = await wait_until(lambda q=queue: q.get(fail=False), timeout_s=10)  # type: ignore[misc]
        assert message.message_id == "poison-1"
        assert int((message.headers or {}).get("x-delivery-count", 0)) == crash
        await connection.close()   # no ack: the broker takes it back
    async with consuming(Worker(settings)):
        reply = await producer.reply(sent, timeout_s=15)
    assert reply.status == 500
    assert reply.body["error"]["title"] == "Poison message"
    assert "delivered 4 times without reaching an outcome" in reply.body["error"]["detail"]
    (dead,) = await take_dead_letters(vhost)
    assert dead.message_id == "poison-1" and dead.headers["x-upsert-error-status"] == 500
    # Refused without being processed: nothing was written.
    assert await db.fetchval("SELECT count(*) FROM vbapi.benefit") == 0
