"""The test's side of the broker: a publisher and a reply collector that both survive the
broker closing their connections, queue counts, and closing the test vhost's connections.

Both use robust connections with a short reconnect interval: the broker-fault test closes
every connection of the vhost, the test's own included, and the ledger must still see
every batch published once and every reply that was sent.
"""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from tests.support.producer import LedgerProducer, wait_drained
from tests.support.services import SERVICES
from tests.support.waiting import wait_until
from vbapi_upsert_client import UpsertClient
from worker.amqp.topology import (
    DEAD_QUEUE,
    REQUEST_QUEUE,
    declare_topology,
    retry_queue_name,
)

REPLY_QUEUE = "faults.replies"
RECONNECT_INTERVAL_S = 0.3
# How long a publish is tried again before the test gives up on the broker.
PUBLISH_DEADLINE_S = 30.0


class TestBroker(LedgerProducer):
    """One robust connection to the test vhost: topology, publishing, replies, counts."""

    def __init__(self, url: str, vhost: str, retry_delays_s: list[float]) -> None:
        super().__init__()
        self.url = url
        self.vhost = vhost
        self.retry_delays_s = retry_delays_s

    async def __aenter__(self) -> TestBroker:
        self.connection: AbstractRobustConnection = await aio_pika.connect_robust(
            self.url, reconnect_interval=RECONNECT_INTERVAL_S,
            client_properties={"connection_name": "faults-test"})
        self.channel = await self.connection.channel(publisher_confirms=True)
        # The same declarations as the worker's, so that nothing published before the
        # worker first starts is dropped for want of a bound queue.
        await declare_topology(self.channel, self.retry_delays_s)
        await self.channel.declare_queue(REPLY_QUEUE, durable=True)
        # The client library on this robust connection, its replies from the durable
        # queue with manual acks: a reply in flight when the connection drops comes back.
        self.client = UpsertClient(self.url, connection=self.connection, replies=REPLY_QUEUE,
                                   parse_replies=False, on_reply=self._on_reply, timeout_s=5)
        await self.client.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.connection.close()

    async def consumers(self) -> int:
        """Consumers on the request queue now (a passive declare on a throwaway channel)."""
        channel = await self.connection.channel()
        try:
            queue = await channel.declare_queue(REQUEST_QUEUE, passive=True)
            return int(queue.declaration_result.consumer_count or 0)
        finally:
            await channel.close()

    async def wait_consumers(self, count: int, timeout_s: float = 30.0) -> None:
        async def reached() -> bool:
            try:
                return await self.consumers() == count
            except Exception:
                return False  # our own connection is being re-established

        await wait_until(reached, timeout_s, 0.1,
                         failure=lambda: f"request queue did not reach {count} consumers")

    async def bounce(self, times: int) -> int:
        """Take the first request off vbapi.requests and give it back unacknowledged by
        closing the channel, ``times`` times: to the broker, exactly what a consumer killed
        with the batch in flight looks like.  Returns its x-delivery-count afterwards."""
        for _ in range(times):
            channel = await self.connection.channel()
            queue = await channel.declare_queue(REQUEST_QUEUE, passive=True)
            message = await queue.get(no_ack=False, fail=False)
            assert message is not None, "nothing to bounce"
            await channel.close()
        channel = await self.connection.channel()
        queue = await channel.declare_queue(REQUEST_QUEUE, passive=True)
        message = await queue.get(no_ack=False, fail=False)
        assert message is not None
        count = int((message.headers or {}).get("x-delivery-count", 0))
        await channel.close()
        return count + 1

    def worker_queues(self) -> list[str]:
        return [REQUEST_QUEUE, *(retry_queue_name(d) for d in self.retry_delays_s)]

    def queue_counts(self) -> dict[str, tuple[int, int]]:
        """Queue -> (ready, unacknowledged), as the broker reports them."""
        return {q.name: (q.ready, q.unacknowledged) for q in SERVICES.broker.queues(self.vhost)}

    async def wait_drained(self, timeout_s: float = 20.0) -> None:
        """Until the request and retry queues hold nothing, ready or unacknowledged."""
        await wait_drained(self.queue_counts, self.worker_queues(), timeout_s)

    async def dead_letters(self) -> list[AbstractIncomingMessage]:
        """Every message in vbapi.dead (taken and acknowledged: the test vhost goes away)."""
        channel = await self.connection.channel()
        out = []
        try:
            queue = await channel.declare_queue(DEAD_QUEUE, durable=True)
            while True:
                message = await queue.get(fail=False, no_ack=True)
                if message is None:
                    return out
                out.append(message)
        finally:
            await channel.close()

    def close_all_connections(self, reason: str) -> None:
        """Close every connection of the test vhost (and only of it) from the broker side."""
        assert self.vhost.startswith("test_"), self.vhost
        SERVICES.broker.close_all_connections(self.vhost, reason)
