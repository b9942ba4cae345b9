"""A validated batch: per item, its answer so far or the row the writer must write.

Made by :func:`worker.core.intake.prepare_batch`, answered by the writer, rendered by
:mod:`worker.core.replies`.  Pure data.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from functools import cache
from operator import itemgetter
from typing import Any

from schemas.entity import Entity

# A validated item: its values in field order, None for a field it left out.
Row = tuple[Any, ...]


@cache
def values_at(positions: tuple[int, ...]) -> Callable[[Row], tuple[Any, ...]]:
    """The values of a row at ``positions``, as a tuple: a key, a parent key."""
    if len(positions) == 1:
        (at,) = positions
        return lambda row: (row[at],)
    return itemgetter(*positions)  # type: ignore[return-value]


class ItemStatus(IntEnum):
    """The answers one item of a batch can get, as the API's 207 body spells them."""

    UPDATED = 200
    CREATED = 201
    BAD_REQUEST = 400        # the item itself is invalid, or the database refused it
    NOT_FOUND = 404          # a parent record is missing
    CONFLICT = 409           # a newer batch wrote the stored record already
    FAILED = 500             # no answer could be found for it (a bug)


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


@dataclass
class Batch:
    """A validated batch: per item, its answer so far or the row to write."""

    entity: Entity
    database: str
    path: str
    user_id: str | None
    message_id: str | None
    source_ts: dt.datetime
    # The activity id its reply carries.
    activity_id: str = ""
    # Never delivered before (not redelivered, not a retry): there can be no recorded
    # reply unless a producer sent the same message_id twice, which the record's unique
    # key still catches.  Lets the writer skip its lookup.
    first_delivery: bool = False
    # Per item, in request order: the key it is answered under ([{key, value}, ...]) ...
    ids: list[list[dict[str, Any]]] = field(default_factory=list)
    # ... and its answer, None while it waits for the database's.
    answers: list[ItemAnswer | None] = field(default_factory=list)
    # (item index, validated row), in request order
    rows: list[tuple[int, Row]] = field(default_factory=list)

    @property
    def producer(self) -> str:
        """Whose message_id this is: the verified user_id, '' where there is none.  The
        processed-message record is keyed by both (worker/store/writer.py)."""
        return self.user_id or ""

    def answer(self, index: int, status: ItemStatus, body: str) -> None:
        self.answers[index] = ItemAnswer(status, body)

    def forget_database_answers(self) -> None:
        """The answers of a rolled-back write (404/409/201/200, isolated errors) are not
        the batch's: its valid items wait for the database's answer again."""
        for index, _ in self.rows:
            self.answers[index] = None
