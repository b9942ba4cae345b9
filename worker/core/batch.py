"""A batch in three steps, each a value one module makes and the next one reads::

    Request ──intake.prepare_batch──▶ Plan ──store (rows.write_rows)──▶ Outcome
    Plan + Outcome ──replies.batch_reply──▶ the 207 body

- :class:`Plan`, immutable: the batch's envelope, per item the key it is answered under,
  the answers known before the database (the 400s of validation) and the validated rows.
- :class:`Outcome`: what one write attempt answered, indexed like the plan's items.  Each
  attempt starts a fresh one from the plan's answers and fills in the database's (404
  missing parents, 201/200/409, isolated item errors); an attempt rolled back is dropped
  with its outcome, so nothing has to be forgotten.
- the reply renders a plan with the outcome of the attempt that committed.

Pure data.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from operator import itemgetter
from typing import Any

from schemas.entity import Entity
from schemas.statuses import ItemStatus as ItemStatus  # the table of statuses, re-exported

# A validated item: its values in field order, None for a field it left out.
Row = tuple[Any, ...]
# The key an item is answered under: its key fields in key order, [{key, value}, ...].
ItemId = list[dict[str, Any]]


@cache
def values_at(positions: tuple[int, ...]) -> Callable[[Row], tuple[Any, ...]]:
    """The values of a row at ``positions``, as a tuple: a key, a parent key."""
    if len(positions) == 1:
        (at,) = positions
        return lambda row: (row[at],)
    return itemgetter(*positions)  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class ItemAnswer:
    status: ItemStatus
    body: str


# The answers the writer gives most, as the API gives them: made once, shared by every item
# that gets them (most items of most batches).
CREATED = ItemAnswer(ItemStatus.CREATED, "Created")
UPDATED = ItemAnswer(ItemStatus.UPDATED, "Updated")
STALE = ItemAnswer(ItemStatus.CONFLICT,
                   "not applied: the stored record was written by a newer batch")


@dataclass(frozen=True, slots=True)
class Plan:
    """A validated batch, as :func:`worker.core.intake.prepare_batch` made it: what every
    write attempt starts from.  Never changed once made: its sequences are read-only by
    type (the lists validation filled, not copied into tuples: a copy per item and attempt
    costs more than it protects)."""

    entity: Entity
    database: str
    path: str
    user_id: str | None
    message_id: str | None
    source_ts: dt.datetime
    # The activity id its reply carries.
    activity_id: str
    # Never delivered before (not redelivered, not a retry): there can be no recorded
    # reply unless a producer sent the same message_id twice, which the record's unique
    # key still catches.  Lets the writer skip its lookup.
    first_delivery: bool
    # Per item, in request order: the key it is answered under ...
    ids: Sequence[ItemId]
    # ... and its answer known before the database (a 400), None for a valid item.
    known: Sequence[ItemAnswer | None]
    # (item index, validated row) of the valid items, in request order.
    rows: Sequence[tuple[int, Row]]
    # A dry run: written in a transaction that is rolled back, never recorded, never
    # grouped with other batches (worker/store/writer.py).
    dry_run: bool = False

    @property
    def producer(self) -> str:
        """Whose message_id this is: the verified user_id, '' where there is none.  The
        processed-message record is keyed by both (worker/store/writer.py)."""
        return self.user_id or ""


class Outcome:
    """One write attempt's answers, indexed like its plan's items: the plan's own, and the
    database's as the attempt fills them in (None while an item waits for it)."""

    __slots__ = ("answers",)

    def __init__(self, plan: Plan) -> None:
        self.answers: list[ItemAnswer | None] = list(plan.known)

    def answer(self, index: int, status: ItemStatus, body: str) -> None:
        self.answers[index] = ItemAnswer(status, body)
