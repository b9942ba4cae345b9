"""Dead letters as the console shows them: filtered by query parameters (``status``,
``database``, ``path``, ``producer``), a page of them at a time, and the selection an
action applies to."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from worker.amqp.letters import DeadLetter

PAGE_SIZE = 50
FILTERS = ("status", "database", "path", "producer")


@dataclass(frozen=True)
class Filters:
    """What a list of dead letters is narrowed to; empty values match everything."""

    status: str = ""
    database: str = ""
    path: str = ""
    producer: str = ""

    @classmethod
    def of(cls, values: Mapping[str, str]) -> Filters:
        return cls(**{name: str(values.get(name, "")).strip()[:200] for name in FILTERS})

    def matches(self, letter: DeadLetter) -> bool:
        found = {"status": "" if letter.error_status is None else str(letter.error_status),
                 "database": letter.database or "", "path": letter.path or "",
                 "producer": letter.user_id or ""}
        return all(not wanted or found[name] == wanted
                   for name, wanted in vars(self).items())

    @property
    def any(self) -> bool:
        return any(vars(self).values())

    def query(self, **more: Any) -> str:
        """The query string of these filters (and ``more``), for links."""
        values = {k: v for k, v in {**vars(self), **more}.items() if v not in ("", None)}
        return urlencode(values)

    def described(self) -> str:
        chosen = [f"{k} {v}" for k, v in vars(self).items() if v]
        return ", ".join(chosen) if chosen else "all"


def row(letter: DeadLetter) -> dict[str, Any]:
    """One line of the dead letters' table."""
    return {"id": letter.id, "when": letter.dead_lettered_at or "",
            "database": letter.database or "", "path": letter.path or "",
            "producer": letter.user_id or "", "status": letter.error_status,
            "reason": letter.error_title or "", "detail": letter.error_detail or "",
            "items": letter.item_count}


@dataclass
class Page:
    rows: list[dict[str, Any]]
    number: int
    pages: int
    total: int


def page_of(letters: Sequence[DeadLetter], filters: Filters, number: int) -> Page:
    chosen = [letter for letter in letters if filters.matches(letter)]
    pages = max(1, -(-len(chosen) // PAGE_SIZE))
    number = min(max(1, number), pages)
    start = (number - 1) * PAGE_SIZE
    return Page([row(d) for d in chosen[start:start + PAGE_SIZE]], number, pages, len(chosen))


def chosen(letters: Sequence[DeadLetter], fields: Mapping[str, str]) -> list[DeadLetter]:
    """The dead letters a form names: one ``id``, else those its filters match (all
    when it has none)."""
    wanted = fields.get("id", "")
    if wanted:
        return [letter for letter in letters if letter.id == wanted]
    filters = Filters.of(fields)
    return [letter for letter in letters if filters.matches(letter)]


def page_number(value: str | None) -> int:
    try:
        return max(1, int(value or 1))
    except ValueError:
        return 1
