"""One asyncpg pool per configured database, opened on first use."""

from __future__ import annotations

import asyncio

import asyncpg

from worker.redaction import mask_detail, secrets_of
from worker.settings import Settings
from worker.store import failures
from worker.store.catalog import CONNECT_TIMEOUT_S


class Databases:
    """One asyncpg pool per configured database, opened on first use."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pools: dict[str, asyncpg.Pool] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        self._secrets = secrets_of(settings)

    async def pool(self, name: str) -> asyncpg.Pool:
        pool = self._pools.get(name)
        if pool is not None:
            return pool
        lock = self._opening.setdefault(name, asyncio.Lock())
        async with lock:
            pool = self._pools.get(name)
            if pool is None:
                db = self._settings.databases[name]
                try:
                    pool = await asyncpg.create_pool(
                        db.dsn.get_secret_value(), min_size=db.pool_min_size,
                        max_size=db.pool_max_size, command_timeout=db.command_timeout_s,
                        timeout=CONNECT_TIMEOUT_S, init=_prefer_lz4, reset=_reset_connection)
                except Exception as e:
                    failure = failures.classify_database_error(e)
                    if failure is None:
                        raise
                    # Its detail goes into replies: nothing of the DSN may show.
                    mask_detail(failure, self._secrets)
                    failures.reraise(failure, e)
                self._pools[name] = pool
            return pool

    def open_pools(self) -> dict[str, asyncpg.Pool]:
        """The pools opened so far, by database name."""
        return dict(self._pools)

    async def ping(self, name: str) -> bool:
        """Whether the database answers now (for readiness)."""
        try:
            pool = await self.pool(name)
            async with pool.acquire(timeout=5) as conn:
                await conn.fetchval("SELECT 1", timeout=5)
            return True
        except Exception:
            return False

    async def close(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        await asyncio.gather(*(p.close() for p in pools), return_exceptions=True)


async def _prefer_lz4(conn: asyncpg.Connection) -> None:
    """Compress what this session stores out of line with lz4 where the server has it.

    The recorded 207 reply of a large batch (about 83 bytes per item) is TOASTed; with
    PostgreSQL's default pglz that costs the server about 0.3 us more per item than with
    lz4 (BENCHMARKS.md).  Servers built without lz4, or older than 14, keep their default.
    """
    try:
        await conn.execute("SET default_toast_compression = 'lz4'")
    except asyncpg.PostgresError:
        pass


async def _reset_connection(conn: asyncpg.Connection) -> None:
    """What a connection needs before it goes back to the pool.

    asyncpg's default reset (unlock advisory locks, close cursors, unlisten, reset settings)
    costs a round trip per batch, and the worker leaves none of that behind: its sessions
    run plain statements in managed transactions.  A transaction left open (a batch
    cancelled mid-write at shutdown) is still rolled back here.
    """
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")
