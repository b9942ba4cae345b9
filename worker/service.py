"""The ``run`` command: connect, declare, migrate (in the background), consume until told
to stop, drain.

The one place besides the command line that holds the whole configuration: it hands each
part the sections it uses."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from aio_pika.abc import AbstractConnection, AbstractQueue
from aiormq.abc import DeliveredMessage

from worker import metrics as m
from worker.amqp.answered import BatchReport
from worker.amqp.consumer import Consumer, Outlets
from worker.amqp.nodes import Nodes, Publisher
from worker.amqp.topology import REPLY_EXCHANGE, REQUEST_QUEUE, declare_topology
from worker.http.health import HealthServer
from worker.logs import get_logger
from worker.processor import Processor
from worker.settings import Settings
from worker.store.expiry import expire_everywhere

log = get_logger("worker.service")

OnMessage = Callable[[DeliveredMessage], Coroutine[Any, Any, None]]


class Worker:
    """One worker process: a broker connection (failing over between nodes), a consumer,
    the database pools."""

    def __init__(self, settings: Settings, processor: Processor | None = None) -> None:
        self.settings = settings
        self.processor = processor or Processor(settings)
        self.stopping = asyncio.Event()
        self.consuming = False
        self.consumer: Consumer | None = None
        # Batches being handled, whichever connection they came from: drained at shutdown.
        self.in_flight: set[asyncio.Task[Any]] = set()
        self.health: HealthServer | None = None
        # The start-up migrations (Processor.start), once begun.
        self.migrations: asyncio.Task[None] | None = None

    def _start_migrations(self) -> None:
        """Once per process, after the first topology declaration: the broker first, so
        that a database that is down or slow to answer cannot delay consuming, and every
        database at once, each bounded by its connect timeout."""
        if self.migrations is None:
            self.migrations = asyncio.create_task(self.processor.start())

    async def run(self) -> None:
        """Serve /metrics, /healthz, /readyz (unless metrics.port is 0) while consuming."""
        if self.settings.amqp.signing_key is None:
            log.warning("amqp.signing_key is not set: this process signs with a key of its "
                        "own, so a retry another process handles, or a replay, loses the "
                        "producer's name and first receipt time; set one shared key for "
                        "every process of a deployment")
        if self.settings.metrics.port:
            self.health = HealthServer(self.settings.metrics, self.settings.databases,
                                       lambda: self.consuming, self.processor.databases.ping,
                                       parked=lambda: self.processor.parked)
            await self.health.start()
        try:
            await self._consume()
        finally:
            if self.health is not None:
                await self.health.close()

    async def _consume(self) -> None:
        amqp = self.settings.amqp
        nodes = Nodes(amqp.urls, timeout_s=amqp.connect_timeout_s,
                      connection_name="vbapi-upsert-worker")
        # The first connection must succeed (a worker that cannot reach any node at start
        # exits, for its supervisor to see); later losses fail over for as long as it runs.
        connection: AbstractConnection | None = await nodes.connect()
        cleanup = asyncio.create_task(self._expire_processed_periodically())
        try:
            while connection is not None:
                lost = await self._serve(connection, nodes)
                if not lost:
                    return
                nodes.lost()
                m.BROKER_FAILOVERS.inc()
                connection = await nodes.reconnect(self.stopping, amqp.reconnect_interval_s)
        finally:
            cleanup.cancel()
            if self.migrations is not None:
                self.migrations.cancel()
            self.consuming = False
            m.BROKER_UP.set(0)
            await self._drain()
            await self.processor.databases.close()
            log.info("stopped")

    async def _serve(self, connection: AbstractConnection, nodes: Nodes) -> bool:
        """Consume on ``connection`` until the worker is told to stop (False) or the
        connection is lost (True).  Closing it hands every unacknowledged batch back."""
        lost = asyncio.Event()
        connection.close_callbacks.add(lambda *_: lost.set())
        try:
            requests = await self._declare(connection)
            # On aiormq's channel below aio-pika's queue: deliveries come as aiormq's
            # messages, without aio-pika's object and task around each (worker/amqp/
            # delivery.py).
            channel = await requests.channel.get_underlay_channel()
            consumer = await self._consumer(connection)
            tag = (await channel.basic_consume(REQUEST_QUEUE, self._tracked(consumer))
                   ).consumer_tag or ""
            m.BROKER_UP.set(1)
            self.consuming = True
            log.info("consuming", queue=REQUEST_QUEUE, prefetch=self.settings.amqp.prefetch_count,
                     node=nodes.current_name)
            await _first_set(self.stopping, lost)
            self.consuming = False
            m.BROKER_UP.set(0)
            if lost.is_set():
                return True
            log.info("stopping: no new batches; draining in-flight ones")
            with contextlib.suppress(Exception):
                await channel.basic_cancel(tag)
            await self._drain()
            return False
        except Exception as e:
            if not lost.is_set() and not connection.is_closed:
                raise
            log.warning("broker connection lost while starting to consume", error=repr(e))
            return True
        finally:
            with contextlib.suppress(Exception):
                await connection.close()

    async def _declare(self, connection: AbstractConnection) -> AbstractQueue:
        """The topology declared (and the migrations started, once), on a channel with the
        prefetch set; its request queue."""
        channel = await connection.channel()
        # Declared before the prefetch is set: a queue kept as it is reopens the
        # channel (worker/amqp/topology.py), and a reopened channel has no prefetch.
        topology = await declare_topology(channel, self.settings.retry.delays_s)
        self._start_migrations()
        await channel.set_qos(prefetch_count=self.settings.amqp.prefetch_count)
        return topology.requests

    async def _consumer(self, connection: AbstractConnection) -> Consumer:
        """A consumer for ``connection``.  Replies, retries and dead letters go on a channel
        of their own, which is replaced when the broker refuses a publish
        (worker/amqp/nodes.py) without touching the consumer.  A consumer per connection: a
        delivery is acknowledged on the channel it came from, or not at all (the broker
        then redelivers it)."""
        publisher = Publisher(await connection.channel(publisher_confirms=True,
                                                       on_return_raises=True))
        replies = await publisher.channel.get_exchange(REPLY_EXCHANGE, ensure=False)
        outlets = Outlets(publisher.watch(publisher.channel.default_exchange),
                          publisher.watch(replies))
        report = BatchReport(self.settings.databases, self.settings.log)
        self.consumer = Consumer(self.processor, outlets, self.settings.amqp,
                                 self.settings.retry, report)
        return self.consumer

    def _tracked(self, consumer: Consumer) -> OnMessage:
        """``consumer.on_message``, each delivery's task kept in ``in_flight`` meanwhile."""
        async def on_message(message: DeliveredMessage) -> None:
            task = asyncio.current_task()
            assert task is not None
            self.in_flight.add(task)
            try:
                await consumer.on_message(message)
            finally:
                self.in_flight.discard(task)

        return on_message

    async def _drain(self) -> None:
        pending = set(self.in_flight)
        if not pending:
            return
        grace = self.settings.worker.shutdown_grace_s
        _, still = await asyncio.wait(pending, timeout=grace)
        if still:
            log.warning("grace period over; handing batches back", count=len(still))
            for task in still:
                task.cancel()
            await asyncio.wait(still, timeout=5)

    async def _expire_processed_periodically(self) -> None:
        settings = self.settings.worker
        while True:
            await asyncio.sleep(settings.processed_cleanup_interval_s)
            try:
                await expire_everywhere(self.processor.databases,
                                        settings.processed_retention_days)
            except Exception as e:
                log.warning("expiring processed message ids failed", error=repr(e))

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)


async def _first_set(*events: asyncio.Event) -> None:
    """Return once one of ``events`` is set."""
    waiting = {asyncio.create_task(event.wait()) for event in events}
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    for task in waiting:
        task.cancel()
