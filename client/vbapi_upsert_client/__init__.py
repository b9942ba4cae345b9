"""vbapi-upsert-client: publish create-or-update batches to the vbapi upsert worker over
RabbitMQ, and read each item's answer (docs/contract.md, section 8).

    async with UpsertClient("amqp://guest:guest@127.0.0.1/%2F", database="demo") as client:
        reply = await client.upsert("/benefits-batch", items)
        reply.raise_for_status()

It depends on aio-pika and orjson only, never on the worker.
"""

from vbapi_upsert_client.client import UpsertClient
from vbapi_upsert_client.errors import (
    BrokerUnreachable,
    ClientError,
    ItemsFailed,
    ProblemError,
    PropertyTooLong,
    ReplyLost,
    UnreadableReply,
    UpsertTimeout,
)
from vbapi_upsert_client.options import ClientOptions, SendOptions
from vbapi_upsert_client.reply import ItemResult, Problem, Reply
from vbapi_upsert_client.sync import SyncUpsertClient

__all__ = [
    "BrokerUnreachable",
    "ClientError",
    "ClientOptions",
    "ItemResult",
    "ItemsFailed",
    "Problem",
    "ProblemError",
    "PropertyTooLong",
    "Reply",
    "ReplyLost",
    "SendOptions",
    "SyncUpsertClient",
    "UnreadableReply",
    "UpsertClient",
    "UpsertTimeout",
]
