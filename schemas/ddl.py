"""The tables the declarations call for, and the SQL that makes them.  Pure: no I/O.

:func:`declared_schema` turns a registry into table and foreign-key specifications;
``worker.store.migrations`` compares them with the live catalog and applies the difference.
Every identifier is quoted: the API's field names include SQL keywords.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from schemas.entity import Entity, Field, Table
from schemas.registry import Registry

SCHEMA = "vbapi"
MIGRATIONS_TABLE = f"{SCHEMA}.schema_migrations"
ENTITIES_TABLE = f"{SCHEMA}.schema_entities"
PROCESSED_TABLE = f"{SCHEMA}.upsert_processed_message"

# Hand-written, append-only steps.  Entity tables are not listed here: they follow from the
# declarations (see declared_schema) so that a new declaration needs no migration.
MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "processed messages: one row per batch message_id with its reply",
        f"""
        CREATE TABLE IF NOT EXISTS {PROCESSED_TABLE} (
            message_id   text PRIMARY KEY,
            status       integer NOT NULL,
            reply        bytea NOT NULL,
            processed_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX IF NOT EXISTS upsert_processed_message_processed_at
            ON {PROCESSED_TABLE} (processed_at);
        """,
    ),
    (
        2,
        "processed messages: a message_id is its producer's, with the path and activity id",
        # A message_id identifies a batch of its producer (the verified user_id, '' where
        # there is none): another producer's equal id is another batch, never answered
        # from this one's record.  Records made before keep '' as their producer.
        f"""
        ALTER TABLE {PROCESSED_TABLE}
            ADD COLUMN IF NOT EXISTS producer text NOT NULL DEFAULT '',
            ADD COLUMN IF NOT EXISTS path text,
            ADD COLUMN IF NOT EXISTS activity_id text;
        ALTER TABLE {PROCESSED_TABLE} DROP CONSTRAINT upsert_processed_message_pkey;
        ALTER TABLE {PROCESSED_TABLE} ADD CONSTRAINT upsert_processed_message_pkey
            PRIMARY KEY (producer, message_id);
        """,
    ),
)

BOOTSTRAP = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
    version     integer PRIMARY KEY,
    description text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {ENTITIES_TABLE} (
    entity      text PRIMARY KEY,
    table_name  text NOT NULL,
    fingerprint text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
"""

# Which batch last wrote each row (contract: lineage columns on every entity table).
LINEAGE_COLUMNS = (("upsert_source_ts", "timestamptz"), ("upsert_message_id", "text"))


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def qualified(table: str) -> str:
    return f"{SCHEMA}.{quote(table)}"


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str
    not_null: bool


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    entity: Entity | None = None


@dataclass(frozen=True)
class ForeignKey:
    table: str
    columns: tuple[str, ...]
    parent: str
    parent_columns: tuple[str, ...]

    @property
    def name(self) -> str:
        # Stable and within PostgreSQL's 63 characters whatever the table names.
        digest = hashlib.sha256(repr((self.columns, self.parent,
                                      self.parent_columns)).encode()).hexdigest()[:10]
        return f"{self.table[:40]}_fk_{digest}"

    @property
    def statement(self) -> str:
        return (f"ALTER TABLE {qualified(self.table)} ADD CONSTRAINT {quote(self.name)} "
                f"FOREIGN KEY ({_names(self.columns)}) "
                f"REFERENCES {qualified(self.parent)} ({_names(self.parent_columns)})")


def _names(columns: tuple[str, ...] | list[str]) -> str:
    return ", ".join(quote(c) for c in columns)


def _column(field: Field, *, not_null: bool) -> Column:
    return Column(field.column, field.sql_type, not_null)


def entity_table(entity: Entity) -> TableSpec:
    columns = [_column(f, not_null=f.required) for f in entity.fields]
    columns += [Column(name, sql_type, False) for name, sql_type in LINEAGE_COLUMNS]
    return TableSpec(entity.table, tuple(columns),
                     tuple(f.column for f in entity.key_fields), entity)


def key_only_table(table: Table) -> TableSpec:
    return TableSpec(table.name, tuple(_column(f, not_null=True) for f in table.columns),
                     table.key)


def foreign_keys(entity: Entity) -> list[ForeignKey]:
    return [ForeignKey(entity.table, tuple(entity.field_named(f).column for f in p.fields),
                       p.table, tuple(p.columns)) for p in entity.parents]


def declared_schema(registry: Registry) -> tuple[list[TableSpec], list[ForeignKey]]:
    """Every table (key-only parent tables first) and every foreign key."""
    tables = [key_only_table(t) for t in registry.tables]
    tables += [entity_table(e) for e in registry.entities]
    keys = [fk for e in registry.entities for fk in foreign_keys(e)]
    return tables, keys


def create_table(spec: TableSpec) -> str:
    lines = [f"{quote(c.name)} {c.sql_type}" + (" NOT NULL" if c.not_null else "")
             for c in spec.columns]
    lines.append(f"PRIMARY KEY ({_names(spec.key)})")
    body = ",\n    ".join(lines)
    return f"CREATE TABLE IF NOT EXISTS {qualified(spec.name)} (\n    {body}\n)"


def fingerprint(spec: TableSpec, keys: list[ForeignKey]) -> str:
    """A digest of a table's declared shape: a changed declaration has a new fingerprint."""
    text = "\n".join([create_table(spec), *(fk.statement for fk in keys)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]
