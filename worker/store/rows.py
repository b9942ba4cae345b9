"""Writing the rows of batches' plans, inside a transaction the writer holds, and answering
every valid item from what the database says (worker/core/answering.py) in a fresh
:class:`~worker.core.batch.Outcome` per plan: the attempt's, dropped with it if it rolls
back.

Missing parents are found with one query per parent table the rows point at, and those
items answered 404.  The rows are upserted with one statement, in key order, so that
concurrent writers lock rows in one global order and do not deadlock each other; a batch
that repeats a key takes one statement per repetition (answering.rounds_by_key), so that
its items are applied one by one, as the contract says.  Batches
of one entity that share no key go in one statement together (no batch can see another's
writes, so the answers are those of writing them one after the other); others are written
one after the other, after taking the row locks of all their keys in that same order.

When the upsert of a batch alone hits an error validation could not foresee (a parent
deleted in between, a value the database refuses), :class:`IsolateItems` asks the writer to
redo the transaction with the rows split in halves under savepoints, so only the offending
items fail: about k*log2(n) extra statements for k bad items among n, and nothing extra on
the happy path.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import orjson

from worker.core.answering import (
    Key,
    KeyGroup,
    Written,
    answer_missing_parents,
    answer_round,
    item_error,
    rounds_by_key,
)
from worker.core.batch import ItemStatus, Outcome, Plan, values_at
from worker.core.errors import InternalSignal
from worker.store import failures
from worker.store.statements import (
    EntityStatements,
    lock_rows_statement,
    statements_for,
)


class IsolateItems(InternalSignal):
    """The bulk statement failed for some item: redo the transaction item-isolating."""


# A plan, this attempt's outcome of it, and its rows in rounds (answering.rounds_by_key).
_Rounds = tuple[Plan, Outcome, list[list[KeyGroup]]]


async def write_rows(conn: asyncpg.Connection, plans: list[Plan], *,
                     isolate: bool) -> list[Outcome]:
    """The outcome of writing each plan: every valid item answered 201, 200, 404, 409, or
    with an isolated error."""
    if len(plans) > 1 and not _share_one_statement(plans):
        await _lock_rows_in_order(conn, plans)
        return [(await write_rows(conn, [plan], isolate=False))[0] for plan in plans]
    outcomes = [Outcome(plan) for plan in plans]
    statements = statements_for(plans[0].entity)
    missing = await _missing_parents(conn, statements, plans)
    written = [(plan, outcome, rounds_by_key(plan, answer_missing_parents(plan, outcome,
                                                                           missing)))
               for plan, outcome in zip(plans, outcomes, strict=True)]
    if isolate:
        # A statement of this plan failed a moment ago: each round under a savepoint,
        # split until the refused items stand alone.
        (plan, outcome, rounds), = written
        for groups in rounds:
            await _bisect(conn, plan, outcome, groups)
    else:
        await _upsert_rounds(conn, statements, written)
    return outcomes


async def _upsert_rounds(conn: asyncpg.Connection, statements: EntityStatements,
                         written: list[_Rounds]) -> None:
    """Round r of every plan in one statement: the plans share no key, so their rounds
    commute, and a group costs one statement per round as a batch alone does."""
    for r in range(max(len(rounds) for _, _, rounds in written)):
        step = [(plan, outcome, rounds[r]) for plan, outcome, rounds in written
                if r < len(rounds)]
        try:
            done = await _upsert(conn, statements, [(plan, groups) for plan, _, groups in step])
        except Exception as e:
            if len(written) > 1 or not failures.is_item_error(e):
                raise
            raise IsolateItems from e
        for _, outcome, groups in step:
            answer_round(outcome, groups, done)


def _share_one_statement(plans: list[Plan]) -> bool:
    """Whether the plans can be upserted with one statement per round: one entity, and
    no key in two of them."""
    entity = plans[0].entity
    if any(plan.entity is not entity for plan in plans):
        return False
    seen: set[Key] = set()
    key_of = values_at(entity.key_positions)
    for plan in plans:
        keys = {key_of(row) for _, row in plan.rows}
        if not seen.isdisjoint(keys):
            return False
        seen |= keys
    return True


async def _missing_parents(conn: asyncpg.Connection, statements: EntityStatements,
                           plans: Sequence[Plan]) -> list[set[Key]]:
    """Per parent of the entity, the parent keys the plans' rows point at that have no
    parent record: one query per parent the rows point at."""
    found: list[set[Key]] = []
    # The checks are made from the entity's parents, in order (worker/store/statements.py).
    for check, parent_positions in zip(statements.parent_checks,
                                       plans[0].entity.parent_positions, strict=True):
        if len(parent_positions) == 1:  # the usual parent: one field, no tuple per row
            (at,) = parent_positions
            values = {row[at] for plan in plans for _, row in plan.rows}
            values.discard(None)
            wanted: set[Key] = {(value,) for value in values}
        else:
            key_of = values_at(parent_positions)
            wanted = {key_of(row) for plan in plans for _, row in plan.rows}
            wanted = {k for k in wanted if None not in k}
        if not wanted:
            found.append(set())
            continue
        columns = list(zip(*wanted, strict=True))
        found.append({tuple(r) for r in await conn.fetch(check.statement, *columns)})
    return found


async def _upsert(conn: asyncpg.Connection, statements: EntityStatements,
                  written: Sequence[tuple[Plan, Sequence[KeyGroup]]]) -> Written:
    """One INSERT ... ON CONFLICT for all groups: which keys it updated and created.

    Each row goes as its values in field order (worker/store/statements.py).  A batch alone
    passes its producer, timestamp and message_id as arguments; in a group every row ends
    with its own batch's, rows in key order like a single batch."""
    if len(written) == 1:
        (plan, groups), = written
        return await _run_upsert(conn, statements.upsert, [g.row for g in groups],
                                 plan.user_id, plan.source_ts, plan.message_id)
    rows: list[tuple[Key, tuple[object, ...]]] = []
    for plan, groups in written:
        origin = (plan.user_id, plan.source_ts, plan.message_id)
        rows += [(g.key, (*g.row, *origin)) for g in groups]
    rows.sort(key=lambda keyed: keyed[0])
    return await _run_upsert(conn, statements.upsert_rows, [row for _, row in rows])


async def _run_upsert(conn: asyncpg.Connection, statement: str,
                      rows: Sequence[tuple[object, ...]],
                      *args: object) -> Written:
    """Run an upsert statement over ``rows`` sent as one JSON array."""
    try:
        # Date-times sent without an offset are UTC (worker/core/validation.py).
        text = orjson.dumps(rows, option=orjson.OPT_NAIVE_UTC).decode()
    except orjson.JSONEncodeError as e:  # e.g. a lone surrogate: the item's own fault
        raise asyncpg.DataError(f"invalid value: {e}") from e
    record = await conn.fetchrow(statement, text, *args, len(rows))
    return Written.from_arrays(tuple(record))


async def _bisect(conn: asyncpg.Connection, plan: Plan, outcome: Outcome,
                  groups: Sequence[KeyGroup], *, known_bad: bool = False) -> bool:
    """Upsert under a savepoint; on an item error, split in halves until it is isolated.

    Returns whether ``groups`` went in with one statement.  ``known_bad`` says a statement
    over these very groups just failed, so they are split without trying them again: when
    the left half goes in whole, the right half must hold the bad item and is split at
    once.  Isolating one bad item among n thus costs about log2(n) statements.  (Should
    the failure have gone away meanwhile, nothing is lost: every item is still written by
    some statement, or answered alone.)
    """
    if not (known_bad and len(groups) > 1):
        statements = statements_for(plan.entity)
        try:
            async with conn.transaction():
                done = await _upsert(conn, statements, [(plan, groups)])
        except Exception as e:
            if not failures.is_item_error(e):
                raise
            if len(groups) == 1:
                status, body = await _item_answer(conn, plan, e)
                outcome.answer(groups[0].index, status, body)
                return False
        else:
            answer_round(outcome, groups, done)
            return True
    middle = len(groups) // 2
    left_whole = await _bisect(conn, plan, outcome, groups[:middle])
    await _bisect(conn, plan, outcome, groups[middle:], known_bad=left_whole)
    return False


async def _item_answer(conn: asyncpg.Connection, plan: Plan,
                       exc: BaseException) -> tuple[ItemStatus, str]:
    """The answer for one item the database refused, naming its fields where it can."""
    names = []
    column = getattr(exc, "column_name", None)
    constraint = getattr(exc, "constraint_name", None)
    if column:
        names = [column]
    elif constraint and getattr(exc, "sqlstate", None) == "23514":
        # A CHECK constraint (an operator's own) names no column; the catalog knows which
        # ones it reads.
        names = [r[0] for r in await conn.fetch(
            "SELECT a.attname FROM pg_constraint c JOIN pg_attribute a "
            "ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey) "
            "WHERE c.conname = $1 AND c.conrelid = to_regclass($2) ORDER BY a.attnum",
            constraint, f"{getattr(exc, 'schema_name', '')}.{getattr(exc, 'table_name', '')}")]
    by_column = {f.column: f.name for f in plan.entity.fields}
    return item_error(exc, [by_column.get(n, n) for n in names])


async def _lock_rows_in_order(conn: asyncpg.Connection, plans: list[Plan]) -> None:
    """Take the row locks of every stored key the group writes, table by table, keys in
    the order a single batch takes them.  Written in arrival order instead, two groups (or
    a group and a batch) in two workers lock shared keys in opposite orders and deadlock,
    each time costing the server's deadlock_timeout and a redo of the whole group."""
    keys: dict[str, tuple[Plan, set[Key]]] = {}
    for plan in plans:
        wanted = keys.setdefault(plan.entity.table, (plan, set()))[1]
        key_of = values_at(plan.entity.key_positions)
        wanted.update(key_of(row) for _, row in plan.rows)
    for table in sorted(keys):
        plan, wanted = keys[table]
        if wanted:
            columns = [list(c) for c in zip(*sorted(wanted), strict=True)]
            await conn.execute(lock_rows_statement(plan.entity), *columns)
