"""The ``run`` command: connect, declare, migrate, consume until told to stop, drain."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import aio_pika

from worker import metrics as m
from worker.consumer import Consumer
from worker.expiry import expire_everywhere
from worker.health import HealthServer
from worker.logs import get_logger
from worker.migrations import migrate
from worker.processor import Processor
from worker.settings import Settings
from worker.topology import REQUEST_QUEUE, declare_topology

log = get_logger("worker.service")


class Worker:
    """One worker process: a robust broker connection, a consumer, the database pools."""

    def __init__(self, settings: Settings, processor: Processor | None = None) -> None:
        self.settings = settings
        self.processor = processor or Processor(settings)
        self.stopping = asyncio.Event()
        self.consuming = False
        self.consumer: Consumer | None = None
        self.health: HealthServer | None = None

    async def migrate_all(self) -> None:
        """Migrate every configured database; one that is down is logged, not fatal:
        its batches are retried until it comes up, and it is migrated before the first."""
        for name, db in self.settings.databases.items():
            try:
                applied = await migrate(db.dsn.get_secret_value(), self.processor.registry)
                self.processor.migrated.add(name)
                log.info("database migrated", database=name, applied=applied)
            except Exception as e:
                log.error("database migration failed", database=name, error=repr(e))

    async def run(self) -> None:
        """Serve /metrics, /healthz, /readyz (unless metrics.port is 0) while consuming."""
        if self.settings.metrics.port:
            self.health = HealthServer(self.settings, lambda: self.consuming,
                                       self.processor.databases.ping)
            await self.health.start()
        try:
            await self._consume()
        finally:
            if self.health is not None:
                await self.health.close()

    async def _consume(self) -> None:
        amqp = self.settings.amqp
        await self.migrate_all()
        connection = await aio_pika.connect_robust(
            amqp.url.get_secret_value(), timeout=amqp.connect_timeout_s,
            reconnect_interval=amqp.reconnect_interval_s,
            client_properties={"connection_name": "vbapi-upsert-worker"})
        connection.reconnect_callbacks.add(lambda *_: m.BROKER_UP.set(1))
        connection.close_callbacks.add(lambda *_: m.BROKER_UP.set(0))
        m.BROKER_UP.set(1)
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            await channel.set_qos(prefetch_count=amqp.prefetch_count)
            topology = await declare_topology(channel, self.settings.retry.delays_s)
            self.consumer = Consumer(self.settings, self.processor, channel.default_exchange,
                                     topology.reply_exchange)
            tag = await topology.requests.consume(self.consumer.on_message)
            self.consuming = True
            log.info("consuming", queue=REQUEST_QUEUE, prefetch=amqp.prefetch_count)
            cleanup = asyncio.create_task(self._expire_processed_periodically())
            await self.stopping.wait()
            log.info("stopping: no new batches; draining in-flight ones")
            self.consuming = False
            with contextlib.suppress(Exception):
                await topology.requests.cancel(tag)
            await self._drain()
            cleanup.cancel()
        finally:
            self.consuming = False
            # Closing hands every unacknowledged batch back to the broker.
            with contextlib.suppress(Exception):
                await connection.close()
            m.BROKER_UP.set(0)
            await self.processor.databases.close()
            log.info("stopped")

    async def _drain(self) -> None:
        assert self.consumer is not None
        pending = set(self.consumer.in_flight)
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
