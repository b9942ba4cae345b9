"""What the database alone can do with the same rows, measured straight through asyncpg.

- raw ceiling: per batch, one transaction that COPYs the rows into a temporary table and
  moves them with one ``INSERT ... SELECT ... ON CONFLICT DO UPDATE``: the fastest plain way
  to upsert a batch, with no validation, no reply and no exactly-once record;
- commit ceiling: single-row upsert transactions, each its own commit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from bench.cpu import CpuMeter
from bench.data import Keys, item
from bench.load import Loops, Run
from bench.plan import Plan
from schemas.registry import default_registry

BENEFIT = default_registry().by_name("Benefit")

_STAGE = "bench_stage"
COLUMNS = [f.column for f in BENEFIT.fields] + ["upsert_source_ts", "upsert_message_id"]
_KEEP_ON_UPDATE = {"benefit_code", "entry_date", "entry_user"}
_SET = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS if c not in _KEEP_ON_UPDATE)
_CONFLICT = (f"ON CONFLICT (benefit_code) DO UPDATE SET {_SET} "
             f"WHERE t.upsert_source_ts IS NULL OR t.upsert_source_ts <= EXCLUDED.upsert_source_ts")
MOVE = (f"INSERT INTO vbapi.benefit AS t ({', '.join(COLUMNS)}) "
        f"SELECT {', '.join(COLUMNS)} FROM {_STAGE} {_CONFLICT}")
SINGLE = (f"INSERT INTO vbapi.benefit AS t ({', '.join(COLUMNS)}) "
          f"VALUES ({', '.join(f'${i + 1}' for i in range(len(COLUMNS)))}) {_CONFLICT}")

Record = tuple[Any, ...]


def records(keys: Keys, size: int, count: int) -> list[list[Record]]:
    """``count`` batches of ``size`` rows, as the worker would store them."""
    now = dt.datetime.now(dt.UTC)
    out = []
    for b in range(count):
        batch = []
        for _ in range(size):
            values = item(keys.take())
            values.update(entry_Date=now, entry_User=None, update_Date=now, update_User=None)
            batch.append((*(values[f.name] for f in BENEFIT.fields), now, f"ceiling-{b}"))
        out.append(batch)
    return out


async def _stage(conn: asyncpg.Connection) -> None:
    await conn.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGE} "
                       f"(LIKE vbapi.benefit) ON COMMIT DELETE ROWS")


async def raw_ceiling(dsn: str, make_work: Callable[[], Sequence[list[Record]]],
                      concurrency: int, plan: Plan) -> tuple[Run, Run]:
    """(the best of the plan's repeated closed loops at ``concurrency`` connections, an open
    loop at half its rate), each on fresh rows from ``make_work``."""
    pool = await asyncpg.create_pool(dsn, min_size=concurrency, max_size=concurrency,
                                     init=_stage)
    try:
        async def write(rows: list[Record]) -> None:
            async with pool.acquire() as conn, conn.transaction():
                await conn.copy_records_to_table(_STAGE, records=rows, columns=COLUMNS)
                await conn.execute(MOVE)

        loops = Loops(write)
        closed: Run | None = None
        for _ in range(plan.repeats):
            work = make_work()
            meter = CpuMeter()
            meter.start()
            run = await loops.closed(work, concurrency, plan.max_s)
            run.cpu = meter.stop(run.batches * len(work[0]))
            if closed is None or run.per_s(run.batches) > closed.per_s(closed.batches):
                closed = run
        assert closed is not None
        half_rate = max(closed.per_s(closed.batches) / 2, 0.5)
        opened = await loops.open(make_work(), half_rate, plan.latency_s)
        return closed, opened
    finally:
        await pool.close()


async def commit_ceiling(dsn: str, keys: Keys, concurrency: int, max_s: float,
                         max_rows: int) -> Run:
    """Single-row upsert transactions per second at ``concurrency`` connections."""
    rows = [batch[0] for batch in records(keys, 1, max_rows)]
    pool = await asyncpg.create_pool(dsn, min_size=concurrency, max_size=concurrency)
    try:
        async def write(row: Record) -> None:
            # asyncpg prepares the statement once per connection and reuses it.
            await pool.execute(SINGLE, *row)

        return await Loops(write).closed(rows, concurrency, max_s)
    finally:
        await pool.close()
