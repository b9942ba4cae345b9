"""The PostgreSQL primary and standby the fault tests fail over between do what
production's do: the standby streams synchronously, so that a commit the primary
confirmed is on the standby, and after a SIGKILL of the primary and the standby's
promotion, a client with both hosts in its URL finds the new primary, rows and all."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.support.faults.pg_pair import STANDBY_NAME, PgPair

pytestmark = [pytest.mark.faults, pytest.mark.timeout(60)]

ROWS = 200

# What a pooled connection raises when the primary dies under it, seen with asyncpg 0.32:
# the connection in use gets ConnectionDoesNotExistError ("terminating connection due to
# unexpected postmaster exit"); an idle one may get InternalClientError ("cannot switch to
# state ..."); a new connection, while no host accepts writes, gets the first host's
# ConnectionRefusedError (not TargetServerAttributeNotMatched: asyncpg raises the last
# connection error it met, and the read-only standby was not an error).
PRIMARY_GONE = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                asyncpg.InternalClientError, OSError)


async def test_a_commit_on_the_primary_is_on_the_synchronous_standby(db_pair: PgPair) -> None:
    assert db_pair.sync_state() == [[STANDBY_NAME, "streaming", "sync"]]
    primary = await asyncpg.connect(db_pair.primary_dsn())
    standby = await asyncpg.connect(db_pair.standby_dsn())
    try:
        assert await standby.fetchval("SELECT pg_is_in_recovery()") is True
        await primary.execute("CREATE TABLE t (n int PRIMARY KEY)")
        await primary.execute("INSERT INTO t VALUES (1)")
        # Synchronous commit waits for the standby to have the WAL, not to have replayed
        # it: the row shows there a moment later.
        for _ in range(100):
            try:
                if await standby.fetchval("SELECT count(*) FROM t WHERE n = 1") == 1:
                    break
            except asyncpg.UndefinedTableError:
                pass  # not even the table yet
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the committed row never reached the standby")
    finally:
        await primary.close()
        await standby.close()


async def test_committed_rows_survive_kill_9_of_the_primary(db_pair: PgPair) -> None:
    pool = await asyncpg.create_pool(db_pair.failover_dsn(), min_size=1, max_size=2)
    try:
        assert await pool.fetchval("SELECT inet_server_port()") == db_pair.primary.port
        await pool.execute("CREATE TABLE t (n int PRIMARY KEY)")
        for n in range(ROWS):  # a commit each: each returned once the standby had it
            await pool.execute("INSERT INTO t VALUES ($1)", n)

        await asyncio.to_thread(db_pair.kill_9_primary)
        with pytest.raises(PRIMARY_GONE):
            await pool.fetchval("SELECT 1")
        with pytest.raises(PRIMARY_GONE):  # the standby is read-only: no host will do
            await asyncpg.connect(db_pair.failover_dsn(), timeout=5)
        await asyncio.to_thread(db_pair.promote_standby)

        conn = await asyncpg.connect(db_pair.failover_dsn(), timeout=5)
        try:
            assert await conn.fetchval("SELECT inet_server_port()") == db_pair.standby.port
            assert await conn.fetchval("SELECT pg_is_in_recovery()") is False
            assert await conn.fetchval("SELECT count(*) FROM t") == ROWS
            await conn.execute("INSERT INTO t VALUES ($1)", ROWS)  # it takes writes
        finally:
            await conn.close()
        # The pool, too, reaches the new primary once its broken connections are gone.
        assert await first_answer(pool, "SELECT count(*) FROM t") == ROWS + 1
    finally:
        pool.terminate()


async def first_answer(pool: asyncpg.Pool, sql: str, attempts: int = 5) -> object:
    """The pool's answer, past the errors of connections the dead primary left in it."""
    for _ in range(attempts - 1):
        try:
            return await pool.fetchval(sql)
        except PRIMARY_GONE:
            await asyncio.sleep(0.1)
    return await pool.fetchval(sql)
