"""The ``run`` command: connect, declare, migrate (in the background), consume until told
to stop, drain."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

from aio_pika.abc import AbstractConnection

from worker import metrics as m
from worker.amqp.consumer import Consumer
from worker.amqp.nodes import Nodes, Publisher
from worker.amqp.topology import REPLY_EXCHANGE, REQUEST_QUEUE, declare_topology
from worker.core import errors
from worker.http.health import HealthServer
from worker.logs import get_logger
from worker.processor import Processor
from worker.settings import Settings
from worker.store.expiry import expire_everywhere

log = get_logger("worker.service")


class Worker:
    """One worker process: a broker connection (failing over between nodes), a consumer,
    the database pools."""

    def __init__(self, settings: Settings, processor: Processor | None = None) -> None:
        self.settings = settings
        self.processor = processor or Processor(settings)
        self.stopping = asyncio.Event()
        self.consuming = False
        self.consumer: Consumer | None = None
        # Batches being handled, whichever connection they came from.
        self.in_flight: set[asyncio.Task[Any]] = set()
        self.health: HealthServer | None = None
        self._migrations: asyncio.Task[None] | None = None

    async def migrate_all(self) -> None:
        """Migrate every configured database at once.  One that is down or parked is
        logged, not fatal: its batches are retried, and it is migrated before the first
        once it answers (worker/store/migrating.py)."""
        await asyncio.gather(*(self._migrate(name) for name in self.settings.databases))

    async def _migrate(self, name: str) -> None:
        try:
            await self.processor.ensure_migrated(name)
        except errors.TransientFailure as e:
            if name not in self.processor.migrator.parked:  # a parked one was said already
                log.warning("database not migrated: unreachable; it is migrated before its "
                            "first batch once it answers", database=name, error=e.detail)
        except Exception as e:
            log.error("database migration failed", database=name, error=repr(e))

    def _start_migrations(self) -> None:
        """Once per process, after the first topology declaration: the broker first, so
        that a database that is down or slow to answer cannot delay consuming, and every
        database at once, each bounded by its connect timeout."""
        if self._migrations is None:
            self._migrations = asyncio.create_task(self.migrate_all())

    async def migrations_settled(self) -> None:
        """Wait until the start-up migrations have run: each database migrated, parked, or
        found down (then migrated before its first batch)."""
        if self._migrations is not None:
            await asyncio.shield(self._migrations)

    async def run(self) -> None:
        """Serve /metrics, /healthz, /readyz (unless metrics.port is 0) while consuming."""
        if self.settings.amqp.signing_key is None:
            log.warning("amqp.signing_key is not set: this process signs with a key of its "
                        "own, so a retry another process handles, or a replay, loses the "
                        "producer's name and first receipt time; set one shared key for "
                        "every process of a deployment")
        if self.settings.metrics.port:
            self.health = HealthServer(self.settings, lambda: self.consuming,
                                       self.processor.databases.ping,
                                       parked=lambda: self.processor.migrator.parked)
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
                connection = await nodes.reconnect(self.stopping,
                                                   self.settings.amqp.reconnect_interval_s)
        finally:
            cleanup.cancel()
            if self._migrations is not None:
                self._migrations.cancel()
            self.consuming = False
            m.BROKER_UP.set(0)
            await self._drain()
            await self.processor.databases.close()
            log.info("stopped")

    async def _serve(self, connection: AbstractConnection, nodes: Nodes) -> bool:
        """Consume on ``connection`` until the worker is told to stop (False) or the
        connection is lost (True).  Closing it hands every unacknowledged batch back."""
        amqp = self.settings.amqp
        lost = asyncio.Event()
        connection.close_callbacks.add(lambda *_: lost.set())
        try:
            channel = await connection.channel()
            # Declared before the prefetch is set: a queue kept as it is reopens the
            # channel (worker/amqp/topology.py), and a reopened channel has no prefetch.
            topology = await declare_topology(channel, self.settings.retry.delays_s)
            self._start_migrations()
            await channel.set_qos(prefetch_count=amqp.prefetch_count)
            # Replies, retries and dead letters go on a channel of their own, which is
            # replaced when the broker refuses a publish (worker/amqp/nodes.py) without
            # touching the consumer.  A consumer per connection: a delivery is acknowledged
            # on the channel it came from, or not at all (the broker then redelivers it).
            publisher = Publisher(await connection.channel(publisher_confirms=True,
                                                           on_return_raises=True))
            self.consumer = Consumer(
                self.settings, self.processor, publisher.watch(publisher.channel.default_exchange),
                publisher.watch(await publisher.channel.get_exchange(REPLY_EXCHANGE,
                                                                     ensure=False)),
                self.in_flight)
            tag = await topology.requests.consume(self.consumer.on_message)
            m.BROKER_UP.set(1)
            self.consuming = True
            log.info("consuming", queue=REQUEST_QUEUE, prefetch=amqp.prefetch_count,
                     node=nodes.current_name)
            stop = asyncio.create_task(self.stopping.wait())
            dropped = asyncio.create_task(lost.wait())
            await asyncio.wait({stop, dropped}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            dropped.cancel()
            self.consuming = False
            m.BROKER_UP.set(0)
            if lost.is_set():
                return True
            log.info("stopping: no new batches; draining in-flight ones")
            with contextlib.suppress(Exception):
                await topology.requests.cancel(tag)
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
