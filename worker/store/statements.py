"""SQL for one entity's writes, derived from its declaration.  Pure: text only.

Sets in, one statement out: every statement works on all rows of a batch at once, so a
batch costs the same few round trips whatever its size.  The upsert takes its rows as one
JSON array of arrays, each row its values in field order (``jsonb_array_elements``):
orjson writes it in a fraction of the client time asyncpg needs to encode one array per
column, and the server reads it with less CPU than objects through ``json_to_recordset``
(BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from schemas.ddl import PROCESSED_TABLE, qualified, quote
from schemas.entity import (
    ENTRY_DATE,
    ENTRY_USER,
    UPDATE_DATE,
    UPDATE_USER,
    Entity,
    Parent,
)
from schemas.kinds import Kind

# Audit fields the item may leave out: the write time, and the producer's user name.
_AUDIT_DEFAULTS = {ENTRY_DATE: "now()", UPDATE_DATE: "now()",
                   ENTRY_USER: "$user", UPDATE_USER: "$user"}
# Written on create only: an update never changes them.
_CREATE_ONLY = {ENTRY_DATE, ENTRY_USER}


def _array_type(kind: Kind) -> str:
    """The type of an array of values of ``kind`` as the worker sends them."""
    return f"{kind.spec.wire_type}[]"


@dataclass(frozen=True)
class ParentCheck:
    """Which parent keys of a set of rows have no parent record (args: one array per
    field, the distinct non-null keys)."""

    parent: Parent
    statement: str


@dataclass(frozen=True)
class EntityStatements:
    """The statements of one entity."""

    upsert: str                      # args: rows (JSON array text), user_id, source_ts,
                                     # message_id, number of rows
    upsert_rows: str                 # args: rows, each ending in its batch's user_id,
                                     # source_ts and message_id; number of rows
    parent_checks: tuple[ParentCheck, ...]


@cache
def statements_for(entity: Entity) -> EntityStatements:
    return EntityStatements(upsert=_upsert(entity, per_row=False),
                            upsert_rows=_upsert(entity, per_row=True),
                            parent_checks=tuple(_parent_check(entity, p)
                                                for p in entity.parents))


def _parent_check(entity: Entity, parent: Parent) -> ParentCheck:
    columns = [quote(c) for c in parent.columns]
    args = ", ".join(f"${i + 1}::{_array_type(entity.field_named(name).kind)}"
                     for i, name in enumerate(parent.fields))
    match = " AND ".join(f"p.{c} = k.{c}" for c in columns)
    return ParentCheck(parent, (
        f"SELECT {', '.join(f'k.{c}' for c in columns)} "
        f"FROM unnest({args}) AS k({', '.join(columns)}) "
        f"WHERE NOT EXISTS (SELECT 1 FROM {qualified(parent.table)} p WHERE {match})"
    ))


def _upsert(entity: Entity, *, per_row: bool) -> str:
    """INSERT ... ON CONFLICT for a JSON array of rows, each an array of the entity's field
    values in field order (null for a field the item left out).  The producer, timestamp
    and message_id of the batch are arguments ($2, $3, $4), or with ``per_row`` three more
    values of each row (a group of batches written in one statement, worker/store/rows.py)."""
    columns = [quote(f.column) for f in entity.fields]
    # Each value as its kind reads it (KindSpec.from_json: by default its text as the
    # wire type; ->> gives SQL NULL for a JSON null), named by its position.
    values = [f'{f.kind.spec.read_from_json("e", i)} AS "{i}"'
              for i, f in enumerate(entity.fields)]
    if per_row:
        count = len(entity.fields)
        values += [f"(e->>{count})::text AS upsert_user",
                   f"(e->>{count + 1})::timestamptz AS upsert_ts",
                   f"(e->>{count + 2})::text AS upsert_mid"]
        user, source_ts, message_id = "i.upsert_user", "i.upsert_ts", "i.upsert_mid"
    else:
        user, source_ts, message_id = "$2", "$3", "$4"
    select = []
    for i, f in enumerate(entity.fields):
        default = _AUDIT_DEFAULTS.get(f.name)
        value = f'i."{i}"'
        if default is None:
            select.append(value)
        else:
            select.append(f'COALESCE({value}, {default.replace("$user", user)})')
    rows = f"(SELECT {', '.join(values)} FROM jsonb_array_elements($1::jsonb) AS e) AS i"
    if not per_row and not any(_AUDIT_DEFAULTS.get(f.name) == "$user" for f in entity.fields):
        # An entity without audit users writes the producer ($2) nowhere; it is named all
        # the same, since a statement must give every argument a type.
        rows += ", (SELECT $2::text) AS producer"
    key_columns = [quote(f.column) for f in entity.key_fields]
    updates = [f"{quote(f.column)} = EXCLUDED.{quote(f.column)}" for f in entity.fields
               if f.name not in _CREATE_ONLY and f.name not in entity.key]
    updates += ["upsert_source_ts = EXCLUDED.upsert_source_ts",
                "upsert_message_id = EXCLUDED.upsert_message_id"]
    # The WHERE on DO UPDATE skips rows written by a newer batch: those come back from
    # RETURNING as nothing, which the writer answers with 409.  xmax = 0 only on rows this
    # statement inserted, which tells 201 from 200.
    insert = (
        f"INSERT INTO {qualified(entity.table)} AS t "
        f"({', '.join(columns)}, upsert_source_ts, upsert_message_id)\n"
        f"SELECT {', '.join(select)}, {source_ts}::timestamptz, {message_id}::text\n"
        f"FROM {rows}\n"
        f"ON CONFLICT ({', '.join(key_columns)}) DO UPDATE SET {', '.join(updates)}\n"
        f"WHERE t.upsert_source_ts IS NULL OR t.upsert_source_ts <= EXCLUDED.upsert_source_ts\n"
        f"RETURNING {', '.join(f't.{c}' for c in key_columns)}, (t.xmax = 0) AS upsert_inserted"
    )
    # One row back instead of one per row written: the keys updated, and only when some
    # rows were not written (409s, rare) the keys created as well; every other row was
    # created.  Saves PostgreSQL sending, and the worker decoding, a row per item.
    row_count = "$2" if per_row else "$5"
    updated = [f"array_agg({c}) FILTER (WHERE NOT upsert_inserted)" for c in key_columns]
    created = [f"CASE WHEN count(*) < {row_count}::bigint THEN "
               f"COALESCE(array_agg({c}) FILTER (WHERE upsert_inserted), '{{}}') END"
               for c in key_columns]
    return (f"WITH written AS (\n{insert}\n)\n"
            f"SELECT {', '.join(updated + created)} FROM written")


@cache
def lock_rows_statement(entity: Entity) -> str:
    """Lock the stored rows of the given keys in the order the keys are given (args: one
    array per key field).  A group of batches (worker/store/rows.py) takes its row locks with
    it up front, keys sorted as a single batch's upsert takes them
    (answering.rounds_by_key), so that groups and single batches lock in one global order
    and do not deadlock."""
    key_fields = entity.key_fields
    args = ", ".join(f"${i + 1}::{_array_type(f.kind)}" for i, f in enumerate(key_fields))
    columns = [quote(f.column) for f in key_fields]
    match = " AND ".join(f"t.{c} = k.{c}" for c in columns)
    # FOR UPDATE locks above the sort, so rows are locked in ORDER BY order.
    return (f"SELECT 1 FROM unnest({args}) WITH ORDINALITY AS k({', '.join(columns)}, n) "
            f"JOIN {qualified(entity.table)} t ON {match} ORDER BY k.n FOR UPDATE OF t")


# The processed-message record is keyed by (producer, message_id): a message_id is its
# producer's (the verified user_id, '' where there is none).
PROCESSED_LOOKUP = (f"SELECT status, reply, activity_id FROM {PROCESSED_TABLE} "
                    f"WHERE producer = $1 AND message_id = $2")
# args: producers, message_ids
PROCESSED_ANY = (f"SELECT EXISTS (SELECT 1 FROM {PROCESSED_TABLE} "
                 f"WHERE (producer, message_id) IN (SELECT * FROM unnest($1::text[], $2::text[])))")
# ON CONFLICT DO NOTHING waits for a concurrent transaction holding the same record key and
# returns no row if that one committed: the caller then rolls back and answers from it.
# args: producer, message_id, path, activity_id, status, reply
PROCESSED_RECORD = (
    f"INSERT INTO {PROCESSED_TABLE} (producer, message_id, path, activity_id, status, reply) "
    f"VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (producer, message_id) DO NOTHING RETURNING 1"
)
# The records of a group of batches in one statement (args: the same, an array each);
# returns one row per record made, as PROCESSED_RECORD does for one.
PROCESSED_RECORD_MANY = (
    f"INSERT INTO {PROCESSED_TABLE} (producer, message_id, path, activity_id, status, reply) "
    f"SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::integer[], "
    f"$6::bytea[]) ON CONFLICT (producer, message_id) DO NOTHING RETURNING 1"
)
# args: retention interval, chunk size.  SKIP LOCKED: two workers cleaning at once share
# the work instead of waiting on each other.
PROCESSED_EXPIRE = (
    f"DELETE FROM {PROCESSED_TABLE} WHERE (producer, message_id) IN ("
    f"SELECT producer, message_id FROM {PROCESSED_TABLE} "
    f"WHERE processed_at < now() - $1::interval LIMIT $2 FOR UPDATE SKIP LOCKED)"
)
