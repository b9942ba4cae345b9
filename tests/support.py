"""Test helpers: isolated broker vhosts and databases on the real services, a worker run
in the test's own event loop, and a producer that publishes and waits for the reply."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aio_pika
import asyncpg
import orjson

from schemas import ddl
from schemas.registry import default_registry
from schemas.samples import Parents
from worker import catalog, migrations
from worker.client import Reply as ClientReply
from worker.client import UpsertClient
from worker.migrations import migrate
from worker.settings import Settings

# The services: the machine's own unless the environment names others.
AMQP_HOST = os.environ.get("TEST_AMQP_HOST", "127.0.0.1")
AMQP_PORT = int(os.environ.get("TEST_AMQP_PORT", "5672"))
AMQP_USER = os.environ.get("TEST_AMQP_USER", "guest")
AMQP_PASSWORD = os.environ.get("TEST_AMQP_PASSWORD", "guest")
PG_DSN = os.environ.get("TEST_PG_DSN", "postgresql://root@127.0.0.1:5432/postgres")


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def rabbitmqctl(*args: str) -> str:
    return subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True,
                          text=True, timeout=60).stdout


def amqp_url(vhost: str, user: str = AMQP_USER, password: str = AMQP_PASSWORD) -> str:
    return f"amqp://{user}:{password}@{AMQP_HOST}:{AMQP_PORT}/{quote(vhost, safe='')}"


@contextlib.contextmanager
def isolated_vhost() -> Iterator[str]:
    """A fresh vhost the default user may use; deleted afterwards (in the background)."""
    vhost = unique("test")
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, AMQP_USER, ".*", ".*", ".*")
    try:
        yield vhost
    finally:
        subprocess.Popen(["rabbitmqctl", "-q", "delete_vhost", vhost],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def dsn_for(database: str) -> str:
    base, _, _ = PG_DSN.rpartition("/")
    return f"{base}/{database}"


@functools.cache
def _template_name() -> str:
    # Named by what this process would build: its declarations as loaded, and the code.
    tables, keys = ddl.declared_schema(default_registry())
    shape = "\n".join([*map(ddl.create_table, tables), *(k.statement for k in keys)])
    code = b"".join(Path(m.__file__).read_bytes() for m in (migrations, catalog, ddl))
    return f"vbapi_template_{hashlib.sha256(shape.encode() + code).hexdigest()[:12]}"


async def migrated_template() -> str:
    """The name of a database migrated to the current declarations, to copy test databases
    from: migrating the 730 tables takes seconds, copying a database a fraction of one.
    Named by the declarations' digest and kept, so a later run reuses it; made under a
    temporary name and renamed, so a half-made one is never used."""
    name = _template_name()
    admin = await asyncpg.connect(PG_DSN)
    try:
        if await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return name
        for (stale,) in await admin.fetch(  # templates of earlier declarations
                "SELECT datname FROM pg_database WHERE datname LIKE 'vbapi\\_template\\_%'"):
            with contextlib.suppress(asyncpg.PostgresError):
                await admin.execute(f'DROP DATABASE "{stale}" WITH (FORCE)')
        scratch = unique("vbapi_template")
        await admin.execute(f'CREATE DATABASE "{scratch}"')
        await migrate(dsn_for(scratch))
        try:
            await admin.execute(f'ALTER DATABASE "{scratch}" RENAME TO "{name}"')
        except asyncpg.DuplicateDatabaseError:  # another run made it meanwhile
            await admin.execute(f'DROP DATABASE "{scratch}" WITH (FORCE)')
        return name
    finally:
        await admin.close()


# Copying the 730-table template costs seconds (thousands of files to sync), so migrated
# databases are reused: after a test, the tables it wrote are emptied and the database
# goes back to this pool, unless the test changed its schema (then it is dropped).
_POOL: list[str] = []
_SHAPE = """
SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')),
       (SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'vbapi'
        AND NOT a.attisdropped),
       (SELECT count(*) FROM pg_constraint), (SELECT count(*) FROM pg_trigger),
       (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')),
       (SELECT string_agg(format_type(a.atttypid, a.atttypmod), ',' ORDER BY c.oid, a.attnum)
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'vbapi'
        AND a.attnum > 0 AND NOT a.attisdropped)
"""
_template_shape: tuple[Any, ...] | None = None


async def _reset(name: str) -> bool:
    """Empty every table of ``name`` that holds rows; False if its schema is no longer the
    template's (or it cannot be reset), so that it must be dropped instead."""
    global _template_shape
    conn = await asyncpg.connect(dsn_for(name))
    try:
        if _template_shape is None:
            template = await asyncpg.connect(dsn_for(await migrated_template()))
            try:
                _template_shape = tuple(await template.fetchrow(_SHAPE))
            finally:
                await template.close()
        if tuple(await conn.fetchrow(_SHAPE)) != _template_shape:
            return False
        await conn.execute("SET lock_timeout = '5s'")
        tables = [r[0] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'vbapi' "
            "AND tablename NOT IN ('schema_migrations', 'schema_entities')")]
        probe = " UNION ALL ".join(
            f"(SELECT $${t}$$ FROM {ddl.qualified(t)} LIMIT 1)" for t in tables)
        written = [r[0] for r in await conn.fetch(probe)]
        if written:
            await conn.execute("TRUNCATE " + ", ".join(ddl.qualified(t) for t in written)
                               + " CASCADE")
        return True
    except (asyncpg.PostgresError, OSError):
        return False
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def isolated_database(*, migrated: bool = False) -> AsyncIterator[str]:
    """A PostgreSQL database of the test's own (its DSN), with schema vbapi already
    migrated if asked, and empty; dropped afterwards (or, if migrated, emptied and kept
    for a later test)."""
    if migrated and _POOL:
        name = _POOL.pop()
    else:
        name = unique("vbapi_test")
        template = f' TEMPLATE "{await migrated_template()}"' if migrated else ""
        admin = await asyncpg.connect(PG_DSN)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"{template}')
        finally:
            await admin.close()
    try:
        yield dsn_for(name)
    finally:
        if migrated and await _reset(name):
            _POOL.append(name)
        else:
            await drop_database(name)


async def insert_parents(conn: asyncpg.Connection, parents: Parents) -> None:
    """Run the parent inserts planned so far, parents before children, in one transaction."""
    async with conn.transaction():
        for statement, values in parents.take():
            await conn.execute(statement, *values)


async def drop_database(name: str) -> None:
    admin = await asyncpg.connect(PG_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def drop_pooled_databases() -> None:
    """At the end of a test run: the pooled databases are no longer needed."""
    while _POOL:
        await drop_database(_POOL.pop())

def make_settings(vhost: str, databases: dict[str, dict[str, Any]], **overrides: Any) -> Settings:
    """Settings for a test: its vhost and databases, no metrics port, short retry delays."""
    values: dict[str, Any] = {
        "amqp": {"url": amqp_url(vhost), "publish_timeout_s": 10.0, "prefetch_count": 8},
        "databases": databases,
        "metrics": {"port": 0},
        "retry": {"delays_s": [0.2, 0.4], "max_deliveries": 3},
        "worker": {"shutdown_grace_s": 10.0},
        "log": {"format": "json", "level": "warning"},
    }
    for key, value in overrides.items():
        values[key] = {**values.get(key, {}), **value} if isinstance(value, dict) else value
    return Settings(**values)


@dataclass
class Reply:
    status: int
    headers: dict[str, Any]
    body: dict[str, Any]
    properties: aio_pika.abc.AbstractIncomingMessage


class Producer:
    """Publishes batches as a producer would, and collects replies: the client library with
    a private reply queue, plus what tests need to send malformed messages (no path or
    database header, raw bodies, any properties)."""

    def __init__(self, url: str) -> None:
        self.client = UpsertClient(url, replies="private", timeout_s=30,
                                   gzip_min_bytes=2**62)  # bodies go exactly as given
        self._replies: dict[str, asyncio.Future[ClientReply]] = {}

    async def __aenter__(self) -> Producer:
        await self.client.open()
        self.channel = self.client.channel
        self.exchange = self.client.exchange
        self.reply_queue = await self.channel.get_queue(self.client.reply_to, ensure=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()

    async def send(self, path: str | None, items: Any = None, *, database: str | None = "demo",
                   body: bytes | None = None, message_id: str | None = None,
                   routing_key: str = "Benefit", **properties: Any) -> str:
        """Publish one batch; returns its correlation id."""
        message_id = message_id or uuid.uuid4().hex
        correlation_id = properties.pop("correlation_id", None) or message_id
        self._replies[correlation_id] = await self.client.send(
            path, body if body is not None else orjson.dumps(items), database=database,
            message_id=message_id, correlation_id=correlation_id, routing_key=routing_key,
            **properties)
        return correlation_id

    async def reply(self, correlation_id: str, timeout_s: float = 30.0) -> Reply:
        answer = await asyncio.wait_for(self._replies[correlation_id], timeout_s)
        assert answer.message is not None
        return Reply(answer.status, answer.headers, orjson.loads(answer.body), answer.message)

    async def call(self, path: str | None, items: Any = None, **kwargs: Any) -> Reply:
        return await self.reply(await self.send(path, items, **kwargs))


async def wait_until(predicate: Any, timeout_s: float = 15.0, interval_s: float = 0.05) -> None:
    """Poll an (async or plain) predicate until it holds; fail after the timeout."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(interval_s)
