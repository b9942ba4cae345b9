"""Whole-message outcomes end to end: error replies, dead letters, reply routing, the
producer checks with real broker users, and acknowledgement only after a confirmed reply."""

from __future__ import annotations

import asyncio
import gzip
import time
from typing import Any

import aio_pika
import asyncpg
import orjson
import pytest

from tests.support import samples
from tests.support.configs import make_settings
from tests.support.producer import Producer
from tests.support.running import running
from tests.support.services import amqp_url
from worker.amqp.consumer import HAND_BACK_PAUSE_S
from worker.amqp.topology import DEAD_QUEUE, REPLY_QUEUE, REQUEST_QUEUE
from worker.service import Worker
from worker.settings import Settings


async def dead_letters(vhost: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Everything in vbapi.dead (taken off the queue)."""
    connection = await aio_pika.connect(amqp_url(vhost))
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(DEAD_QUEUE, durable=True)
        found = []
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            found.append(message)
        return found


async def next_reply(queue: aio_pika.abc.AbstractQueue,
                     timeout_s: float = 10.0) -> aio_pika.abc.AbstractIncomingMessage | None:
    """The first message to arrive in ``queue`` (taken off it), or None after the timeout."""
    for _ in range(int(timeout_s / 0.05)):
        message = await queue.get(fail=False, no_ack=True)
        if message is not None:
            return message
        await asyncio.sleep(0.05)
    return None


@pytest.mark.parametrize(("kwargs", "status", "detail"), [
    ({"body": b"[{]"}, 400, "body is not valid JSON"),
    ({"body": b'{"a": 1}'}, 400, "body must be a JSON array of items"),
    ({"path": None}, 400, "missing header 'path'"),
    ({"database": None}, 400, "missing header 'vbasoftware-database'"),
    ({"path": "/unknown-batch"}, 404, "no endpoint matches path '/unknown-batch'"),
    ({"database": "elsewhere"}, 404, "database 'elsewhere' is not configured"),
    ({"content_type": "application/xml"}, 415, "content type 'application/xml'"),
    ({"body": b"[" + b" " * 3000 + b"]"}, 413, "over the limit of 2000"),
    ({"body": gzip.compress(b"[" + b" " * 100_000 + b"]"), "content_encoding": "gzip"}, 413,
     "decompressed body is over the limit of 4000 bytes"),
])
async def test_whole_message_error_reply_and_dead_letter(
        kwargs: dict[str, Any], status: int, detail: str, vhost: str, dsn: str) -> None:
    settings = make_settings(vhost, {"demo": {"dsn": dsn}},
                             limits={"max_body_bytes": 2000, "max_decompressed_bytes": 4000})
    kwargs.setdefault("path", samples.BENEFIT_PATH)
    async with running(settings), Producer(amqp_url(vhost)) as producer:
        reply = await producer.call(items=[samples.benefit()], message_id="m-1",
                                    correlation_id="c-1", **kwargs)
    assert reply.status == status
    assert reply.body["data"] is None
    error = reply.body["error"]
    assert error["status"] == status and detail in error["detail"]
    assert error["instance"] == kwargs["path"] and error["title"] and error["type"]
    assert reply.properties.correlation_id == "c-1"
    assert reply.headers["activity-id"] == reply.body["debug"]["activityID"]

    (dead,) = await dead_letters(vhost)
    assert dead.message_id == "m-1" and dead.correlation_id == "c-1"
    assert dead.reply_to == reply.properties.routing_key
    assert dead.body == kwargs.get("body", orjson.dumps([samples.benefit()]))
    headers = dead.headers or {}
    assert headers["x-upsert-error-status"] == status
    assert detail in headers["x-upsert-error-detail"]
    assert headers["x-upsert-error-title"] == error["title"]
    assert headers["x-upsert-activity-id"] == reply.body["debug"]["activityID"]
    assert headers["x-upsert-attempts"] == 1 and headers["x-upsert-dead-lettered-at"]
    if kwargs["path"]:
        assert headers["path"] == kwargs["path"]


@pytest.mark.parametrize(("path", "items", "routing_key", "status"), [
    (samples.ARMOR_PATH, [samples.armor(5)], "ArmorCodeExCode", 207),
    ("/nope", [], "unknown", 404),  # no entity: the replies' routing key is "unknown"
])
async def test_reply_without_reply_to_goes_to_the_replies_queue(
        path: str, items: list[Any], routing_key: str, status: int, worker: Worker,
        vhost: str) -> None:
    connection = await aio_pika.connect(amqp_url(vhost))
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("vbapi")
        await exchange.publish(aio_pika.Message(
            body=orjson.dumps(items), message_id="no-reply-to",
            headers={"path": path, "vbasoftware-database": "demo"}),
            routing_key="Whatever")  # the worker routes by path, not by routing key
        reply = await next_reply(await channel.declare_queue(REPLY_QUEUE, passive=True))
    assert reply is not None
    assert reply.routing_key == routing_key
    assert reply.correlation_id == "no-reply-to"  # falls back to the message_id
    assert reply.content_type == "application/json"
    assert reply.headers is not None and reply.headers["status"] == status
    if status == 207:
        assert orjson.loads(reply.body)["data"][0]["status"] == 201


async def test_producer_checks_with_real_producer_users(vhost: str, dsn: str,
                                                      producer_user: tuple[str, str],
                                                      db: asyncpg.Connection) -> None:
    user, password = producer_user
    settings = make_settings(vhost, {"demo": {"dsn": dsn, "producers": [user]}})
    async with running(settings):
        async with Producer(amqp_url(vhost)) as guest:
            anonymous = await guest.call(samples.BENEFIT_PATH, [samples.benefit("B1")])
            wrong = await guest.call(samples.BENEFIT_PATH, [samples.benefit("B2")],
                                     user_id="guest")
        async with Producer(amqp_url(vhost, user, password)) as acme:
            allowed = await acme.call(samples.BENEFIT_PATH, [samples.benefit("B3")],
                                      user_id=user)
    assert anonymous.status == 401 and anonymous.body["error"]["status"] == 401
    assert wrong.status == 403 and "producer 'guest' may not write" in \
        wrong.body["error"]["detail"]
    assert allowed.status == 207 and allowed.body["data"][0]["status"] == 201
    row = await db.fetchrow("SELECT entry_user, update_user FROM vbapi.benefit")
    assert (row["entry_user"], row["update_user"]) == (user, user)
    assert await db.fetchval("SELECT count(*) FROM vbapi.benefit") == 1


async def test_the_broker_refuses_a_forged_user_id(vhost: str, producer_user: tuple[str, str],
                                                   settings: Settings) -> None:
    user, _ = producer_user
    connection = await aio_pika.connect(amqp_url(vhost))
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange("vbapi", aio_pika.ExchangeType.TOPIC,
                                                  durable=True)
        with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
            await exchange.publish(aio_pika.Message(b"[]", user_id=user), routing_key="x")


class _FailingFirstReply:
    """The real default exchange, except that the first publish is never confirmed."""

    def __init__(self, exchange: Any) -> None:
        self._exchange = exchange
        self.failures = 0
        self.published_at: list[float] = []

    async def publish_body(self, *args: Any, **kwargs: Any) -> Any:
        """How the consumer publishes a reply (worker/amqp/nodes.py)."""
        self.published_at.append(time.monotonic())
        if self.failures == 0:
            self.failures += 1
            raise TimeoutError("publish not confirmed")
        return await self._exchange.publish_body(*args, **kwargs)


async def test_request_is_acked_only_after_the_reply_is_confirmed(
        settings: Settings, producer: Producer, vhost: str, db: asyncpg.Connection) -> None:
    async with running(settings) as worker:
        assert worker.consumer is not None
        failing = _FailingFirstReply(worker.consumer.default_exchange)
        worker.consumer.default_exchange = failing  # type: ignore[assignment]
        reply = await producer.call(samples.ARMOR_PATH, [samples.armor(1)], message_id="once")
    # The first reply failed, so the request was handed back instead of acknowledged (after
    # a pause, so that failures in a burst do not use up its deliveries); its redelivery
    # was answered from the recorded reply, and the row was written once.
    assert failing.failures == 1
    first, second = failing.published_at
    assert second - first >= HAND_BACK_PAUSE_S
    assert reply.body["data"][0]["status"] == 201
    assert await db.fetchval("SELECT count(*) FROM vbapi.armor_code_ex_code") == 1
    connection = await aio_pika.connect(amqp_url(vhost))
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(REQUEST_QUEUE, passive=True)
        assert queue.declaration_result.message_count == 0
