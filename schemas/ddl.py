"""Table definitions derived from the entity declarations, and the versioned migrations.

Pure: functions here return SQL text; ``worker.migrations`` runs it.
"""

from __future__ import annotations

import hashlib

from schemas.entity import Entity, Field
from schemas.registry import Registry

SCHEMA = "vbapi"
MIGRATIONS_TABLE = f"{SCHEMA}.schema_migrations"
ENTITIES_TABLE = f"{SCHEMA}.schema_entities"
PROCESSED_TABLE = f"{SCHEMA}.upsert_processed_message"

# Hand-written, append-only steps.  Entity tables are not listed here: they follow from the
# declarations (see entity_statements) so that a new declaration needs no migration.
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


def qualified(table: str) -> str:
    return f"{SCHEMA}.{table}"


def _column(field: Field, *, not_null: bool) -> str:
    return f"{field.column} {field.sql_type}" + (" NOT NULL" if not_null else "")


def parent_statement(entity: Entity) -> str | None:
    """CREATE TABLE for the entity's parent: at least its key columns."""
    if entity.parent is None:
        return None
    fields = [entity.field_named(name) for name in entity.parent.fields]
    columns = ",\n    ".join(_column(f, not_null=True) for f in fields)
    key = ", ".join(entity.parent.columns)
    return (
        f"CREATE TABLE IF NOT EXISTS {qualified(entity.parent.table)} (\n"
        f"    {columns},\n    PRIMARY KEY ({key})\n)"
    )


def table_statement(entity: Entity) -> str:
    """CREATE TABLE for the entity, with its key, lineage columns and parent foreign key."""
    lines = [_column(f, not_null=f.required) for f in entity.fields]
    lines += ["upsert_source_ts timestamptz", "upsert_message_id text"]
    key_columns = ", ".join(entity.field_named(k).column for k in entity.key)
    lines.append(f"PRIMARY KEY ({key_columns})")
    if entity.parent is not None:
        columns = ", ".join(entity.parent.columns)
        lines.append(
            f"CONSTRAINT {entity.table}_parent_fk FOREIGN KEY ({columns}) "
            f"REFERENCES {qualified(entity.parent.table)} ({columns})"
        )
    body = ",\n    ".join(lines)
    return f"CREATE TABLE IF NOT EXISTS {qualified(entity.table)} (\n    {body}\n)"


def column_upgrades(entity: Entity) -> list[str]:
    """ADD COLUMN for fields declared after the table was made (added as nullable, since
    existing rows have no value for them)."""
    table = qualified(entity.table)
    return [
        f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {_column(f, not_null=False)}"
        for f in entity.fields
    ] + [
        f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS upsert_source_ts timestamptz",
        f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS upsert_message_id text",
    ]


def entity_statements(entity: Entity) -> list[str]:
    """Everything that makes the entity's storage exist, idempotently."""
    parent = parent_statement(entity)
    return ([parent] if parent else []) + [table_statement(entity)] + column_upgrades(entity)


def fingerprint(entity: Entity) -> str:
    """A digest of the entity's DDL: a changed declaration has a new fingerprint."""
    text = "\n".join(entity_statements(entity))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def all_entity_statements(registry: Registry) -> list[tuple[Entity, list[str]]]:
    return [(e, entity_statements(e)) for e in registry.entities]
