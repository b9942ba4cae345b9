"""Creates or upgrades schema ``vbapi`` in a database: compared with the live catalog,
applied in one transaction, serialized, recorded.

Two workers migrating at once queue on one advisory lock.  What the declarations call for
(:func:`schemas.ddl.declared_schema`) is compared with what the catalog holds, and only the
difference is applied: missing tables and columns are created, columns are widened in
place, keys and foreign keys follow the declarations.  A change that could lose data (a
narrower column than what is stored, another type over stored values, a key the stored rows
violate) is refused with :class:`MigrationRefused`, and then nothing at all is applied or
recorded: each table's fingerprint is recorded in the same transaction as its changes.
"""

from __future__ import annotations

import asyncpg

from schemas import ddl
from schemas.ddl import Column, ForeignKey, TableSpec, qualified, quote
from schemas.registry import Registry, default_registry
from worker.core.errors import OperatorError
from worker.store import failures
from worker.store.catalog import (
    VARCHAR_DECLARED,
    Catalog,
    connect_creating,
    display_type,
    read_catalog,
)

# Any fixed 64-bit number; the same in every worker.
_MIGRATION_LOCK = 0x76626170_69757073


class MigrationRefused(OperatorError):
    """The declarations call for a change that could lose stored data."""


async def migrate(dsn: str, registry: Registry | None = None) -> list[str]:
    """Bring the database up to date; returns what was applied (empty when nothing was).
    Connecting is bounded (:data:`~worker.store.catalog.CONNECT_TIMEOUT_S`): a database that
    does not answer raises TransientFailure, as one that refuses."""
    registry = registry or default_registry()
    try:
        conn = await connect_creating(dsn)
    except Exception as e:
        failures.reraise(failures.classify_database_error(e), e)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(ddl.BOOTSTRAP)
            applied = await _hand_written(conn)
            applied += await _Migration(conn, registry).run()
    finally:
        await conn.close()
    return applied


async def _hand_written(conn: asyncpg.Connection) -> list[str]:
    applied = []
    done = {r["version"] for r in await conn.fetch(
        f"SELECT version FROM {ddl.MIGRATIONS_TABLE}")}
    for version, description, sql in ddl.MIGRATIONS:
        if version not in done:
            await conn.execute(sql)
            await conn.execute(f"INSERT INTO {ddl.MIGRATIONS_TABLE} (version, description) "
                               f"VALUES ($1, $2)", version, description)
            applied.append(f"migration {version}: {description}")
    return applied


class _Migration:
    """One run: the catalog read once, the differences applied in order."""

    def __init__(self, conn: asyncpg.Connection, registry: Registry) -> None:
        self.conn = conn
        self.tables, self.keys = ddl.declared_schema(registry)
        self.applied: list[str] = []
        self.created: set[str] = set()

    async def run(self) -> list[str]:
        catalog = await read_catalog(self.conn)
        created = [t for t in self.tables if t.name not in catalog.columns]
        if created:
            # One round trip for all new tables: a first migration makes hundreds.
            await self.conn.execute(";\n".join(ddl.create_table(t) for t in created))
            self.created = {t.name for t in created}
            self.applied += [f"table {qualified(t.name)} created" for t in created]
        for table in self.tables:
            if table.name not in self.created:
                await self._upgrade_table(table, catalog)
        await self._foreign_keys(catalog)
        await self._record(catalog)
        return self.applied

    async def _upgrade_table(self, table: TableSpec, catalog: Catalog) -> None:
        stored = catalog.columns[table.name]
        for column in table.columns:
            if column.name not in stored:
                await self._add_column(table, column)
            else:
                await self._change_column(table, column, *stored[column.name])
        name, key = catalog.primary_keys.get(table.name, ("", ()))
        if key != table.key:
            await self._change_key(table, name)

    async def _add_column(self, table: TableSpec, column: Column) -> None:
        target = qualified(table.name)
        await self.conn.execute(f"ALTER TABLE {target} ADD COLUMN {quote(column.name)} "
                                f"{column.sql_type}")
        self.applied.append(f"{target}.{column.name} {column.sql_type} added")
        if column.not_null:
            await self._set_not_null(table, column, new=True)

    async def _set_not_null(self, table: TableSpec, column: Column, *, new: bool = False
                            ) -> None:
        target = qualified(table.name)
        nulls = await self.conn.fetchval(
            f"SELECT count(*) FROM {target} WHERE {quote(column.name)} IS NULL")
        if nulls:
            # Rows that predate the column: kept, and the column stays nullable for them
            # (said once, when it is added).  Validation still requires the field in every
            # item written from now on.
            if new:
                self.applied.append(f"{target}.{column.name} kept nullable: {nulls} stored "
                                    f"rows have no value")
            return
        await self.conn.execute(f"ALTER TABLE {target} ALTER COLUMN {quote(column.name)} "
                                f"SET NOT NULL")
        if not new:
            self.applied.append(f"{target}.{column.name} now NOT NULL")

    async def _change_column(self, table: TableSpec, column: Column, stored_type: str,
                             not_null: bool) -> None:
        target = qualified(table.name)
        declared = column.sql_type
        if display_type(stored_type) != declared:
            await self._check_type_change(table, column, display_type(stored_type))
            await self.conn.execute(
                f"ALTER TABLE {target} ALTER COLUMN {quote(column.name)} TYPE {declared} "
                f"USING {quote(column.name)}::{declared}")
            self.applied.append(f"{target}.{column.name} {display_type(stored_type)} -> "
                                f"{declared}")
        if column.not_null and not not_null and column.name not in table.key:
            await self._set_not_null(table, column)
        elif not column.not_null and not_null and column.name not in table.key:
            await self.conn.execute(f"ALTER TABLE {target} ALTER COLUMN "
                                    f"{quote(column.name)} DROP NOT NULL")
            self.applied.append(f"{target}.{column.name} now nullable")

    async def _check_type_change(self, table: TableSpec, column: Column, stored: str) -> None:
        """Widening is always safe; anything else only where what is stored survives it."""
        declared = column.sql_type
        old, new = VARCHAR_DECLARED.fullmatch(stored), VARCHAR_DECLARED.fullmatch(declared)
        if (old and declared == "text") or (old and new and int(new[1]) >= int(old[1])):
            return
        target = qualified(table.name)
        name = quote(column.name)
        if (old or stored == "text") and new:
            longest = await self.conn.fetchval(f"SELECT max(length({name})) FROM {target}")
            if longest is not None and longest > int(new[1]):
                raise MigrationRefused(
                    f"{target}.{column.name}: stored values of up to {longest} characters "
                    f"({stored}) do not fit the declared {declared}")
            return
        values = await self.conn.fetchval(
            f"SELECT count({name}) FROM {target}")
        if values:
            raise MigrationRefused(
                f"{target}.{column.name}: {values} stored values of type {stored} could be "
                f"lost as the declared {declared}")

    async def _change_key(self, table: TableSpec, constraint: str) -> None:
        target = qualified(table.name)
        if constraint:
            # CASCADE drops the foreign keys that lean on the old key; the foreign-key
            # pass below puts back those still declared.
            await self.conn.execute(f"ALTER TABLE {target} DROP CONSTRAINT "
                                    f"{quote(constraint)} CASCADE")
        try:
            async with self.conn.transaction():
                await self.conn.execute(f"ALTER TABLE {target} ADD PRIMARY KEY "
                                        f"({', '.join(quote(c) for c in table.key)})")
        except (asyncpg.UniqueViolationError, asyncpg.NotNullViolationError) as e:
            raise MigrationRefused(
                f"{target}: the stored rows do not fit the declared key "
                f"({', '.join(table.key)}): {e}") from e
        self.applied.append(f"{target} key is now ({', '.join(table.key)})")

    async def _foreign_keys(self, catalog: Catalog) -> None:
        # Read again: changing a key above may have dropped foreign keys.
        present = (await read_catalog(self.conn)).foreign_keys if self.applied \
            else catalog.foreign_keys
        declared = {(k.table, k.columns, k.parent, k.parent_columns): k for k in self.keys}
        for identity, (name, _) in present.items():
            if identity not in declared:
                await self.conn.execute(f"ALTER TABLE {qualified(identity[0])} "
                                        f"DROP CONSTRAINT {quote(name)}")
                self.applied.append(f"{qualified(identity[0])}: foreign key to "
                                    f"{identity[2]} dropped (no longer declared)")
        missing = [k for identity, k in declared.items() if identity not in present]
        fresh = [k for k in missing if k.table in self.created]
        if fresh:
            await self.conn.execute(";\n".join(k.statement for k in fresh))
            self.applied += [f"{qualified(k.table)}: foreign key to {k.parent}" for k in fresh]
        for key in missing:
            if key.table not in self.created:
                await self._add_foreign_key(key)

    async def _add_foreign_key(self, key: ForeignKey) -> None:
        """On a table with rows: enforced for every write from now on, and validated for
        the stored rows where they allow it."""
        target = qualified(key.table)
        await self.conn.execute(f"{key.statement} NOT VALID")
        try:
            async with self.conn.transaction():
                await self.conn.execute(f"ALTER TABLE {target} VALIDATE CONSTRAINT "
                                        f"{quote(key.name)}")
        except asyncpg.ForeignKeyViolationError:
            self.applied.append(f"{target}: foreign key to {key.parent} added, not valid for "
                                f"stored rows without a parent record")
            return
        self.applied.append(f"{target}: foreign key to {key.parent}")

    async def _record(self, catalog: Catalog) -> None:
        keys_by_table: dict[str, list[ForeignKey]] = {}
        for key in self.keys:
            keys_by_table.setdefault(key.table, []).append(key)
        known = {r["entity"]: r["fingerprint"] for r in await self.conn.fetch(
            f"SELECT entity, fingerprint FROM {ddl.ENTITIES_TABLE}")}
        rows = []
        for table in self.tables:
            name = table.entity.name if table.entity is not None else f"table:{table.name}"
            print_ = ddl.fingerprint(table, keys_by_table.get(table.name, []))
            if known.get(name) != print_:
                rows.append((name, table.name, print_))
        if rows:
            await self.conn.executemany(
                f"INSERT INTO {ddl.ENTITIES_TABLE} (entity, table_name, fingerprint) "
                f"VALUES ($1, $2, $3) ON CONFLICT (entity) DO UPDATE SET "
                f"fingerprint = EXCLUDED.fingerprint, table_name = EXCLUDED.table_name, "
                f"applied_at = now()", rows)
