"""The tests' PostgreSQL databases: each test its own, copied from a template migrated once
to the current declarations, and emptied and reused after the test when it can be."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg

from schemas import ddl
from schemas.registry import default_registry
from tests.support.services import SERVICES, dsn_for, unique
from worker.store import catalog, migrations
from worker.store.migrations import migrate

# A template of other declarations is dropped once no run has used it for this long: runs
# of other versions of the code (another branch, on this machine at the same time) keep
# theirs while they last.
STALE_TEMPLATE_S = 3600.0


@functools.cache
def _template_name() -> str:
    # Named by what this process would build: its declarations as loaded, and the code.
    tables, keys = ddl.declared_schema(default_registry())
    shape = "\n".join([*map(ddl.create_table, tables), *(k.statement for k in keys)])
    code = b"".join(Path(str(m.__file__)).read_bytes() for m in (migrations, catalog, ddl))
    return f"vbapi_template_{hashlib.sha256(shape.encode() + code).hexdigest()[:12]}"


async def _touch(admin: asyncpg.Connection, name: str) -> None:
    """Record on the template when a run last used it, in its comment: a database's own
    place for a note, which copying the template leaves alone.  Best effort: another run
    may be touching or dropping it at the same moment."""
    with contextlib.suppress(asyncpg.PostgresError):
        await admin.execute(f"COMMENT ON DATABASE \"{name}\" IS 'used {time.time():.0f}'")


async def _drop_stale_templates(admin: asyncpg.Connection) -> None:
    """Drop the templates (and half-made ones) that no run has used for a while.  One with
    no record of its use, made by a run that keeps none, is given one now."""
    now = time.time()
    for name, used in await admin.fetch(
            "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
            "WHERE datname LIKE 'vbapi\\_template\\_%'"):
        try:
            last = float((used or "").removeprefix("used "))
        except ValueError:
            await _touch(admin, name)
            continue
        if now - last > STALE_TEMPLATE_S:
            with contextlib.suppress(asyncpg.PostgresError):
                await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


async def migrated_template() -> str:
    """The name of a database migrated to the current declarations, to copy test databases
    from: migrating the 730 tables takes seconds, copying a database a fraction of one.
    Named by the declarations' digest and kept, so a later run reuses it; made under a
    temporary name and renamed, so a half-made one is never used."""
    name = _template_name()
    async with SERVICES.admin() as admin:
        if await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await _touch(admin, name)
            return name
        await _drop_stale_templates(admin)
        scratch = unique("vbapi_template")
        await admin.execute(f'CREATE DATABASE "{scratch}"')
        await migrate(dsn_for(scratch))
        try:
            await admin.execute(f'ALTER DATABASE "{scratch}" RENAME TO "{name}"')
        except asyncpg.DuplicateDatabaseError:  # another run made it meanwhile
            await admin.execute(f'DROP DATABASE "{scratch}" WITH (FORCE)')
        await _touch(admin, name)
        return name


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
        await SERVICES.create_database(name, await migrated_template() if migrated else None)
    try:
        yield dsn_for(name)
    finally:
        if migrated and await _reset(name):
            _POOL.append(name)
        else:
            await SERVICES.drop_database(name)


async def drop_pooled_databases() -> None:
    """At the end of a test run: the pooled databases are no longer needed."""
    while _POOL:
        await SERVICES.drop_database(_POOL.pop())
