"""The ``publish`` command: send one batch the way a producer would, and wait for its reply."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from dataclasses import dataclass

import aio_pika
import orjson

from schemas.registry import default_registry
from worker.batch import DATABASE_HEADER, PATH_HEADER
from worker.settings import Settings
from worker.topology import REQUEST_EXCHANGE, declare_topology


def format_reply(body: bytes) -> str:
    """The reply as indented JSON with one line per item, readable for a person."""
    reply = orjson.loads(body)
    if not isinstance(reply, dict) or not isinstance(reply.get("data"), list):
        return orjson.dumps(reply, option=orjson.OPT_INDENT_2).decode()
    items = ",\n".join(f"    {orjson.dumps(item).decode()}" for item in reply["data"])
    rest = "".join(f',\n  "{key}": {orjson.dumps(value).decode()}'
                   for key, value in reply.items() if key != "data")
    return f'{{\n  "data": [\n{items}\n  ]{rest}\n}}'


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    correlation_id: str | None


async def publish_batch(settings: Settings, *, database: str, path: str, body: bytes,
                        user_id: str | None = None, message_id: str | None = None,
                        timeout_s: float = 60.0) -> Reply:
    """Publish ``body`` as a batch to ``vbapi`` and return the worker's reply.

    Raises TimeoutError when no reply comes within ``timeout_s``.
    """
    route = default_registry().route(path)
    routing_key = route.entity.name if route else "unknown"
    message_id = message_id or str(uuid.uuid4())
    connection = await aio_pika.connect(settings.amqp.url.get_secret_value(),
                                        timeout=settings.amqp.connect_timeout_s)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await declare_topology(channel, settings.retry.delays_s)
        exchange = await channel.get_exchange(REQUEST_EXCHANGE)
        reply_queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        got: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()

        async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                if message.correlation_id == message_id and not got.done():
                    status = (message.headers or {}).get("status", 0)
                    got.set_result(Reply(int(status) if isinstance(status, int) else 0,
                                         message.body, message.correlation_id))

        await reply_queue.consume(on_reply)
        await exchange.publish(
            aio_pika.Message(
                body=body, content_type="application/json", message_id=message_id,
                correlation_id=message_id, reply_to=reply_queue.name, user_id=user_id,
                timestamp=dt.datetime.now(dt.UTC), delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers={PATH_HEADER: path, DATABASE_HEADER: database}),
            routing_key=routing_key, timeout=settings.amqp.publish_timeout_s)
        return await asyncio.wait_for(got, timeout_s)
