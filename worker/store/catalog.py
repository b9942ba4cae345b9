"""What schema ``vbapi`` of a database holds now, read from ``pg_catalog``: its tables'
columns with their types, its primary keys and its foreign keys (worker/store/migrations.py
compares this with the declarations).  Also the connection that creates the database
when it does not exist yet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import asyncpg

from schemas import ddl

# How long a connection to a database may take to be made (asyncpg's default is 60 s): a
# database that does not answer at all (a host gone, packets dropped) must fail fast enough
# for the worker to start, and its batches to be retried, within seconds.
CONNECT_TIMEOUT_S = 10.0


async def connect_creating(dsn: str, timeout: float = CONNECT_TIMEOUT_S
                           ) -> asyncpg.Connection:
    """Connect, creating the database first if it does not exist yet."""
    try:
        return await asyncpg.connect(dsn, timeout=timeout)
    except asyncpg.InvalidCatalogNameError:
        pass
    name = unquote(urlsplit(dsn).path.lstrip("/"))
    if not name:
        # Not quoting the DSN: it may hold a password.
        raise ValueError("cannot create a database without a name in the DSN")
    admin = await asyncpg.connect(dsn, database="postgres", timeout=timeout)
    try:
        # Quoted as an identifier (a name may hold a '"' of its own).
        await admin.execute(f"CREATE DATABASE {ddl.quote(name)}")
    except asyncpg.DuplicateDatabaseError:
        pass  # another worker made it first
    finally:
        await admin.close()
    return await asyncpg.connect(dsn, timeout=timeout)


@dataclass
class Catalog:
    """What schema vbapi holds now."""

    columns: dict[str, dict[str, tuple[str, bool]]]   # table -> column -> (type, not null)
    primary_keys: dict[str, tuple[str, tuple[str, ...]]]  # table -> (constraint, columns)
    foreign_keys: dict[tuple[str, tuple[str, ...], str, tuple[str, ...]], tuple[str, bool]]


_CATALOG_COLUMNS = """
SELECT c.relname AS table_name, a.attname AS column_name,
       format_type(a.atttypid, a.atttypmod) AS sql_type, a.attnotnull AS not_null
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY c.relname, a.attnum
"""
_CATALOG_CONSTRAINTS = """
SELECT con.contype::text AS contype, con.conname, c.relname AS table_name, p.relname AS parent,
       con.convalidated,
       ARRAY(SELECT attname FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute ON attrelid = con.conrelid AND attnum = k.n ORDER BY k.i)
           AS columns,
       ARRAY(SELECT attname FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute ON attrelid = con.confrelid AND attnum = k.n ORDER BY k.i)
           AS parent_columns
FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_class p ON p.oid = con.confrelid
WHERE n.nspname = $1 AND con.contype IN ('p', 'f')
"""


async def read_catalog(conn: asyncpg.Connection) -> Catalog:
    columns: dict[str, dict[str, tuple[str, bool]]] = {}
    for r in await conn.fetch(_CATALOG_COLUMNS, ddl.SCHEMA):
        columns.setdefault(r["table_name"], {})[r["column_name"]] = (r["sql_type"],
                                                                     r["not_null"])
    primary: dict[str, tuple[str, tuple[str, ...]]] = {}
    foreign: dict[tuple[str, tuple[str, ...], str, tuple[str, ...]], tuple[str, bool]] = {}
    for r in await conn.fetch(_CATALOG_CONSTRAINTS, ddl.SCHEMA):
        if r["contype"] == "p":
            primary[r["table_name"]] = (r["conname"], tuple(r["columns"]))
        else:
            foreign[(r["table_name"], tuple(r["columns"]), r["parent"],
                     tuple(r["parent_columns"]))] = (r["conname"], r["convalidated"])
    return Catalog(columns, primary, foreign)


_VARCHAR = re.compile(r"character varying\((\d+)\)")
VARCHAR_DECLARED = re.compile(r"varchar\((\d+)\)")


_SHORT_NAMES = {"timestamp with time zone": "timestamptz"}


def display_type(sql_type: str) -> str:
    """The catalog's spelling of a type as the declarations spell it."""
    match = _VARCHAR.fullmatch(sql_type)
    if match:
        return f"varchar({match.group(1)})"
    return _SHORT_NAMES.get(sql_type, sql_type)
