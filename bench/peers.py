"""The two consumers the worker is compared with, each run as its own process like the worker:

- ``echo``: the bare broker round trip.  Same client library, same queue, same prefetch; it
  only publishes a (confirmed) reply and acknowledges, touching no database.
- ``echo-aiormq``: the same below aio-pika, with aiormq's channel directly: what a
  consumer's fixed cost per message is without aio-pika's per-message objects.
- ``naive``: the consumer most people would write: aio-pika, ``json.loads``, one pydantic
  model per item, ``executemany`` of a single-row upsert in a transaction, a reply per
  message, ack when done.

    python -m bench.peers echo  --url URL --prefetch N
    python -m bench.peers echo-aiormq --url URL --prefetch N
    python -m bench.peers naive --url URL --dsn DSN --prefetch N --pool N
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import signal
from typing import Annotated, Any

import aio_pika
import asyncpg
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from worker.amqp.topology import REQUEST_QUEUE, declare_topology
from worker.settings import RetrySettings

# The Benefit's optional text fields: any string or null, absent meaning null.
OptionalText = Annotated[str | None, Field(default=None)]


class NaiveBenefit(BaseModel):
    """What a hand-written model of the Benefit item looks like."""

    model_config = ConfigDict(strict=True, extra="forbid")

    benefit_Code: str = Field(min_length=1, max_length=10)
    allow_Flat_Tax: bool
    benefit_Category: OptionalText
    benefit_Description: OptionalText
    default_Unit_Type: OptionalText
    hipaA_Code: OptionalText
    invalid_Diag_Ex_Code: OptionalText
    invalid_Procedure_Ex_Code: OptionalText
    invalid_Prov_Type_Ex_Code: OptionalText
    invalid_Specialty_Ex_Code: OptionalText
    medicare: str = Field(min_length=1, max_length=1)
    pend_Ex_Code: OptionalText
    pend_Flag: str = Field(min_length=1, max_length=1)
    require_Type_Of_Svc: OptionalText
    entry_Date: dt.datetime | None = None
    entry_User: str | None = Field(default=None, max_length=20)
    update_Date: dt.datetime | None = None
    update_User: str | None = Field(default=None, max_length=20)


_COLUMNS = [name.lower() for name in NaiveBenefit.model_fields]
_UPDATED = [c for c in _COLUMNS if c not in ("benefit_code", "entry_date", "entry_user")]
NAIVE_UPSERT = (
    f"INSERT INTO vbapi.benefit ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join(f'${i + 1}' for i in range(len(_COLUMNS)))}) "
    f"ON CONFLICT (benefit_code) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in _UPDATED)
)


def _row(model: NaiveBenefit) -> tuple[Any, ...]:
    now = dt.datetime.now(dt.UTC)
    values = model.model_dump()
    values["entry_Date"] = values["entry_Date"] or now
    values["update_Date"] = values["update_Date"] or now
    return tuple(values.values())


async def reply(exchange: AbstractExchange, request: AbstractIncomingMessage,
                body: bytes) -> None:
    await exchange.publish(
        aio_pika.Message(body=body, content_type="application/json",
                         correlation_id=request.correlation_id or request.message_id,
                         delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                         headers={"status": 207}),
        routing_key=request.reply_to or "")


# What both echo consumers reply.
ECHO_BODY = b'{"data": [], "error": null}'


async def _consuming_until_signalled() -> None:
    """Say so to the benchmark (which waits for the line), then consume until SIGTERM."""
    print("consuming", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve(args: argparse.Namespace) -> None:
    connection = await aio_pika.connect(args.url)
    channel = await connection.channel(publisher_confirms=True)
    await channel.set_qos(prefetch_count=args.prefetch)
    topology = await declare_topology(channel, RetrySettings().delays_s)
    exchange = channel.default_exchange
    pool: asyncpg.Pool | None = None
    if args.kind == "naive":
        pool = await asyncpg.create_pool(args.dsn, min_size=args.pool, max_size=args.pool)

    async def echo(message: AbstractIncomingMessage) -> None:
        await reply(exchange, message, ECHO_BODY)
        await message.ack()

    async def naive(message: AbstractIncomingMessage) -> None:
        assert pool is not None
        async with message.process():
            results: list[dict[str, Any]] = []
            rows = []
            for raw in json.loads(message.body):
                try:
                    model = NaiveBenefit(**raw)
                except ValidationError as e:
                    results.append({"status": 400, "body": str(e)})
                    continue
                rows.append(_row(model))
                results.append({"id": model.benefit_Code, "status": 200})
            async with pool.acquire() as conn, conn.transaction():
                await conn.executemany(NAIVE_UPSERT, rows)
            await reply(exchange, message, json.dumps({"data": results}).encode())

    await topology.requests.consume(echo if args.kind == "echo" else naive)
    await _consuming_until_signalled()
    await connection.close()
    if pool is not None:
        await pool.close()


async def serve_aiormq(args: argparse.Namespace) -> None:
    """The bare round trip on aiormq's channel: consume, publish a confirmed reply, ack."""
    import aiormq
    from pamqp.commands import Basic

    # The topology as the worker declares it, with aio-pika, once.
    declaring = await aio_pika.connect(args.url)
    await declare_topology(await declaring.channel(), RetrySettings().delays_s)
    await declaring.close()
    connection = await aiormq.connect(args.url)
    channel = await connection.channel(publisher_confirms=True)
    await channel.basic_qos(prefetch_count=args.prefetch)
    async def echo(message: aiormq.abc.DeliveredMessage) -> None:
        request = message.header.properties
        await channel.basic_publish(ECHO_BODY, routing_key=request.reply_to or "",
                                    properties=Basic.Properties(
                                        content_type="application/json",
                                        correlation_id=request.correlation_id
                                        or request.message_id,
                                        delivery_mode=2, headers={"status": 207}))
        assert isinstance(message.delivery, Basic.Deliver) and message.delivery.delivery_tag
        await channel.basic_ack(message.delivery.delivery_tag)

    await channel.basic_consume(REQUEST_QUEUE, echo)
    await _consuming_until_signalled()
    await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers")
    parser.add_argument("kind", choices=["echo", "echo-aiormq", "naive"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--dsn")
    parser.add_argument("--prefetch", type=int, default=16)
    parser.add_argument("--pool", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(serve_aiormq(args) if args.kind == "echo-aiormq" else serve(args))


if __name__ == "__main__":
    main()
