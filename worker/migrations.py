"""Creates or upgrades schema ``vbapi`` in a database: versioned, recorded, serialized.

Two workers migrating at once queue on one advisory lock; every step is recorded in
``vbapi.schema_migrations`` (hand-written steps) or ``vbapi.schema_entities`` (tables
derived from the declarations, re-applied when a declaration's fingerprint changes).
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import asyncpg

from schemas import ddl
from schemas.registry import Registry, default_registry
from worker import errors

# Any fixed 64-bit number; the same in every worker.
_MIGRATION_LOCK = 0x76626170_69757073


async def connect_creating(dsn: str) -> asyncpg.Connection:
    """Connect, creating the database first if it does not exist yet."""
    try:
        return await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:
        pass
    name = unquote(urlsplit(dsn).path.lstrip("/"))
    if not name:
        raise ValueError(f"cannot create a database without a name in the DSN: {dsn!r}")
    admin = await asyncpg.connect(dsn, database="postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    except asyncpg.DuplicateDatabaseError:
        pass  # another worker made it first
    finally:
        await admin.close()
    return await asyncpg.connect(dsn)


async def migrate(dsn: str, registry: Registry | None = None) -> list[str]:
    """Bring the database up to date; returns what was applied (empty when nothing was)."""
    registry = registry or default_registry()
    try:
        conn = await connect_creating(dsn)
    except Exception as e:
        raise (errors.classify_database_error(e) or e) from e
    applied: list[str] = []
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(ddl.BOOTSTRAP)
            done = {r["version"] for r in await conn.fetch(
                f"SELECT version FROM {ddl.MIGRATIONS_TABLE}")}
            for version, description, sql in ddl.MIGRATIONS:
                if version not in done:
                    await conn.execute(sql)
                    await conn.execute(
                        f"INSERT INTO {ddl.MIGRATIONS_TABLE} (version, description) "
                        f"VALUES ($1, $2)", version, description)
                    applied.append(f"migration {version}: {description}")
            known = {r["entity"]: r["fingerprint"] for r in await conn.fetch(
                f"SELECT entity, fingerprint FROM {ddl.ENTITIES_TABLE}")}
            for entity, statements in ddl.all_entity_statements(registry):
                fingerprint = ddl.fingerprint(entity)
                if known.get(entity.name) == fingerprint:
                    continue
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute(
                    f"INSERT INTO {ddl.ENTITIES_TABLE} (entity, table_name, fingerprint) "
                    f"VALUES ($1, $2, $3) ON CONFLICT (entity) DO UPDATE SET "
                    f"fingerprint = EXCLUDED.fingerprint, applied_at = now()",
                    entity.name, entity.table, fingerprint)
                applied.append(f"entity {entity.name} -> {ddl.qualified(entity.table)}")
    finally:
        await conn.close()
    return applied
