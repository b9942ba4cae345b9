"""Start-up with a database down, or one whose migration is refused: the worker connects to
the broker and declares its topology first, migrates the databases at once in the
background, and serves the others meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import asyncpg
from structlog.testing import capture_logs

from tests.support import samples
from tests.support.configs import make_settings
from tests.support.databases import isolated_database
from tests.support.producer import Producer
from tests.support.reliability_support import take_dead_letters
from tests.support.running import consuming, running
from tests.support.services import free_port, http_get
from worker.service import Worker
from worker.store.catalog import CONNECT_TIMEOUT_S


@contextlib.asynccontextmanager
async def silent_port() -> AsyncIterator[int]:
    """A port of 127.0.0.1 that accepts connections and never says a word: a database
    host whose packets are dropped, as a client sees it."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for writer in held:
            writer.transport.abort()




async def test_databases_that_do_not_answer_keep_no_other_from_being_served(
        vhost: str, dsn: str, producer: Producer) -> None:
    """One database never answers (its migration waits out the connect timeout), one
    refuses connections: the worker consumes at once, answers the third's batches, and
    retries the others' as transient failures until they are answered 503."""
    async with silent_port() as silent:
        settings = make_settings(vhost, {
            "silent": {"dsn": f"postgresql://root@127.0.0.1:{silent}/vbapi_silent"},
            "refused": {"dsn": f"postgresql://root@127.0.0.1:{free_port()}/vbapi_refused"},
            "demo": {"dsn": dsn}}, retry={"delays_s": [0.2]})
        started = time.monotonic()
        async with consuming(Worker(settings)):
            # Before, the worker migrated first, one database after the other, and the
            # silent one alone held it up for asyncpg's 60 s connect timeout.
            assert time.monotonic() - started < 5
            silent_batch = await producer.send(samples.ARMOR_PATH, [samples.armor(1)],
                                               database="silent")
            refused_batch = await producer.send(samples.ARMOR_PATH, [samples.armor(1)],
                                                database="refused")
            served = await producer.call(samples.ARMOR_PATH, [samples.armor(1)])
            assert time.monotonic() - started < 5
            assert served.body["data"][0]["status"] == 201
            refused = await producer.reply(refused_batch, timeout_s=10)
            # Waits out the connect timeout twice: at start, then on its retry.
            silent_reply = await producer.reply(silent_batch,
                                                timeout_s=3 * CONNECT_TIMEOUT_S)
    for reply in (refused, silent_reply):
        assert reply.status == 503
        detail = reply.body["error"]["detail"]
        assert "database unreachable" in detail and "(after 2 attempts)" in detail
    assert "TimeoutError" in silent_reply.body["error"]["detail"]
    dead = await take_dead_letters(vhost)
    assert sorted(str(m.headers["vbasoftware-database"]) for m in dead) == ["refused", "silent"]


async def test_a_refused_migration_parks_its_database(vhost: str, dsn: str,
                                                       producer: Producer) -> None:
    """A stored value longer than the declared varchar: the migration is refused.  The
    database is parked (one log line, the reason in /readyz), its batches are retried and
    answered 503, the migration is not run again, and the other database is served."""
    port = free_port()
    async with isolated_database(migrated=True) as legacy_dsn:
        legacy = await asyncpg.connect(legacy_dsn)
        try:
            await legacy.execute("ALTER TABLE vbapi.armor_code_ex_code "
                                 "ALTER COLUMN ex_code TYPE varchar(12)")
            await legacy.execute("INSERT INTO vbapi.armor_code_ex_code (armorcodeexcode_key, "
                                 "armor_code, ex_code) VALUES (1, 'X', 'ELEVEN-LONG')")
            settings = make_settings(vhost, {"demo": {"dsn": dsn}, "legacy": {"dsn": legacy_dsn}},
                                     metrics={"host": "127.0.0.1", "port": port})
            with capture_logs() as logs:
                async with running(settings):
                    first = await producer.call(samples.ARMOR_PATH, [samples.armor(2)],
                                                database="legacy")
                    # Fixed meanwhile: a migration would pass now, but none is run again
                    # (the operator restarts the worker).
                    await legacy.execute("UPDATE vbapi.armor_code_ex_code SET ex_code = 'OK'")
                    second = await producer.call(samples.ARMOR_PATH, [samples.armor(3)],
                                                 database="legacy")
                    served = await producer.call(samples.ARMOR_PATH, [samples.armor(1)])
                    ready = await asyncio.to_thread(http_get, port, "/readyz")
            assert await legacy.fetchval("SELECT count(*) FROM vbapi.armor_code_ex_code") == 1
        finally:
            await legacy.close()
    reason = ('vbapi."armor_code_ex_code".ex_code: stored values of up to 11 characters '
              '(varchar(12)) do not fit the declared varchar(6)')
    for reply in (first, second):
        assert reply.status == 503, reply.body
        detail = reply.body["error"]["detail"]
        assert detail == (f"database legacy is parked: migration refused: {reason} "
                          f"(after 3 attempts)")
    assert served.status == 207 and served.body["data"][0]["status"] == 201
    parked = [e for e in logs if e["event"].startswith("database parked")]
    assert [(e["log_level"], e["database"], e["reason"]) for e in parked] == [
        ("error", "legacy", reason)]
    status, body = ready
    assert status == 503 and f"database legacy parked: {reason}" in body
    assert [m.headers["x-upsert-error-status"] for m in await take_dead_letters(vhost)] == [
        503, 503]
