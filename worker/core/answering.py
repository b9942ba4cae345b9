"""How the database's results become each item's answer, pure: rows in rounds by key, the
201/200/409 of an upsert's RETURNING, the 404 of a missing parent, the 400 of a value the
database refused.  The store (worker/store/rows.py) runs the statements; this says what
they mean for every item, in the attempt's :class:`~worker.core.batch.Outcome`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from worker.core.batch import CREATED, STALE, UPDATED, ItemStatus, Outcome, Plan, Row, values_at

Key = tuple[Any, ...]


class KeyGroup(msgspec.Struct, gc=False):
    """One valid item of a round: its key, its index in the request, its row.

    A msgspec Struct rather than a dataclass: one is made per valid item, and its C
    constructor costs a third of a dataclass's.  It holds no cycles, hence gc=False."""

    key: Key
    index: int
    row: Row


def rounds_by_key(plan: Plan, rows: Sequence[tuple[int, Row]]) -> list[list[KeyGroup]]:
    """The items in rounds that the writer applies one after the other, each round with one
    statement: round r holds the r-th item of every key, sorted by key (so concurrent
    batches lock rows in one global order).

    Items of one key are applied one by one, in request order, as the contract says: each
    gets the answer of what happened to it (a later item is an update of an earlier one;
    an item the database refuses fails alone, and the next item of its key is applied as
    if it had never been sent).  Merging them into one row would answer every item of the
    key with the merged row's fate.  The usual batch, no key twice, is one round."""
    entity = plan.entity
    if len(entity.key_positions) == 1:
        # The usual key, one field: its values hash and sort faster than 1-tuples.
        (at,) = entity.key_positions
        values = [row[at] for _, row in rows]
        if len(set(values)) == len(values):  # the usual batch: no key twice
            order = sorted(range(len(values)), key=values.__getitem__)
            return [[KeyGroup((values[i],), rows[i][0], rows[i][1]) for i in order]] \
                if rows else []
    else:
        keys = [values_at(entity.key_positions)(row) for _, row in rows]
        if len(set(keys)) == len(keys):
            order = sorted(range(len(keys)), key=keys.__getitem__)
            return [[KeyGroup(keys[i], rows[i][0], rows[i][1]) for i in order]] \
                if rows else []
    return _rounds_of_repeated_keys(plan, rows)


def _rounds_of_repeated_keys(plan: Plan, rows: Sequence[tuple[int, Row]]
                             ) -> list[list[KeyGroup]]:
    key_of = values_at(plan.entity.key_positions)
    by_key: dict[Key, list[KeyGroup]] = {}
    for index, row in rows:
        key = key_of(row)
        by_key.setdefault(key, []).append(KeyGroup(key, index, row))
    ordered = [by_key[k] for k in sorted(by_key)]
    depth = max(len(items) for items in ordered)
    return [[items[r] for items in ordered if r < len(items)] for r in range(depth)]


def answer_missing_parents(plan: Plan, outcome: Outcome,
                           missing: list[set[Key]]) -> Sequence[tuple[int, Row]]:
    """Answer 404 for the plan's items whose parent key is ``missing``; return the others."""
    if not any(missing):
        return plan.rows
    kept = []
    checks = [(parent, values_at(positions), keys)
              for parent, positions, keys in zip(plan.entity.parents,
                                                 plan.entity.parent_positions, missing,
                                                 strict=True)]
    for index, row in plan.rows:
        problems = []
        for parent, parent_key_of, keys in checks:
            key = parent_key_of(row)
            if key in keys:
                shown = ", ".join(f"{f}={_show_parent_key_value(v)}"
                                  for f, v in zip(parent.fields, key, strict=True))
                problems.append(f"parent {parent.table} not found: {shown}")
        if problems:
            outcome.answer(index, ItemStatus.NOT_FOUND, "; ".join(problems))
        else:
            kept.append((index, row))
    return kept


@dataclass(frozen=True, slots=True)
class Written:
    """What one upsert statement wrote: the keys it updated, and the keys it created if it
    did not write every row (None: every row it did not update, it created)."""

    updated: frozenset[Key]
    created: frozenset[Key] | None

    @classmethod
    def from_arrays(cls, arrays: Sequence[list[Any] | None]) -> Written:
        """From the upsert's one row: an array per key field of the keys updated (null
        if none), then one per key field of the keys created (null when every row was
        written)."""
        half = len(arrays) // 2
        updated, created = arrays[:half], arrays[half:]
        return cls(_keys(updated), None if created[0] is None else _keys(created))


def _keys(columns: Sequence[list[Any] | None]) -> frozenset[Key]:
    if columns[0] is None:  # array_agg over no rows
        return frozenset()
    return frozenset(zip(*columns, strict=True))


def answer_round(outcome: Outcome, groups: Sequence[KeyGroup], written: Written) -> None:
    """201/200 for the items of a round the upsert wrote, 409 for the others."""
    answers = outcome.answers
    updated, created = written.updated, written.created
    if not updated and created is None:  # the usual batch of new keys: every row created
        for group in groups:
            answers[group.index] = CREATED
        return
    for group in groups:
        key = group.key
        if key in updated:
            answers[group.index] = UPDATED
        elif created is None or key in created:
            answers[group.index] = CREATED
        else:
            answers[group.index] = STALE


def item_error(exc: BaseException, fields: Sequence[str] = ()) -> tuple[ItemStatus, str]:
    """The answer for one item the database refused; ``fields`` are the JSON names of the
    columns the error concerns, when known."""
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if sqlstate == "23503":
        detail = getattr(exc, "detail", None) or str(exc)
        return ItemStatus.NOT_FOUND, f"parent record not found: {detail}"
    if sqlstate[:2] in ("22", "23") or isinstance(exc, ValueError):
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        named = ", ".join(fields) or getattr(exc, "constraint_name", None)
        return ItemStatus.BAD_REQUEST, f"{named}: {message}" if named else message
    return ItemStatus.FAILED, f"unexpected failure: {type(exc).__name__}"


def _show_parent_key_value(value: Any) -> str:
    """A key value in a 404 answer: date-times quoted in ISO form, others as Python shows
    them."""
    if hasattr(value, "isoformat"):
        return f"'{value.isoformat()}'"
    return repr(value)
