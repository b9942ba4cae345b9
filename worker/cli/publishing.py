"""What the ``publish`` command does (worker/cli/publish.py): send one batch the way a
producer would, and wait for its reply."""

from __future__ import annotations

from typing import Unpack

import orjson

from vbapi_upsert_client import Reply, SendOptions, UpsertClient
from worker.amqp.nodes import connect_first
from worker.amqp.topology import declare_topology
from worker.settings import AmqpSettings, RetrySettings


def format_reply(body: bytes) -> str:
    """The reply as indented JSON with one line per item, readable for a person."""
    reply = orjson.loads(body)
    if not isinstance(reply, dict) or not isinstance(reply.get("data"), list):
        return orjson.dumps(reply, option=orjson.OPT_INDENT_2).decode()
    items = ",\n".join(f"    {orjson.dumps(item).decode()}" for item in reply["data"])
    rest = "".join(f',\n  "{key}": {orjson.dumps(value).decode()}'
                   for key, value in reply.items() if key != "data")
    return f'{{\n  "data": [\n{items}\n  ]{rest}\n}}'


async def publish_batch(amqp: AmqpSettings, retry: RetrySettings, path: str, body: bytes, *,
                        timeout_s: float = 60.0, **options: Unpack[SendOptions]) -> Reply:
    """Publish ``body`` as a batch to ``vbapi`` and return the worker's reply, through the
    client library.  The topology (of the ``retry`` delays) is declared first, so that a
    batch published before any worker started waits in the queue.  ``options`` are the
    client's (database, user_id, message_id, ...).  Raises UpsertTimeout (a TimeoutError)
    when no reply comes within ``timeout_s``."""
    connection = await connect_first(amqp.urls, timeout_s=amqp.connect_timeout_s,
                                     connection_name="upsert-worker publish")
    async with connection:
        channel = await connection.channel()
        await declare_topology(channel, retry.delays_s)
        await channel.close()
        async with UpsertClient("", connection=connection, timeout_s=timeout_s) as client:
            return await client.upsert(path, body, **options)
