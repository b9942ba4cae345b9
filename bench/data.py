"""The rows every contender writes: Benefit items, clean or with 1% invalid and 1% missing
parents, under keys that never repeat within a run (so every write is a create); and for
the worker alone, items of the widest entity with every field set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from schemas.registry import default_registry
from tests.support.samples import Parents, insert_parents, make_item, path_for

PATH = "/benefits-batch"
ROUTING_KEY = "Benefit"
CATEGORIES = tuple(f"CAT{i:02d}" for i in range(20))
# Which items of every hundred are spoiled in the "1% bad" data.
INVALID_SLOT = 37
ORPHAN_SLOT = 71

_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _base36(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 36)
        out.append(_DIGITS[r])
    return "".join(reversed(out))


class Keys:
    """Unique benefit codes (at most 10 characters) for the whole run."""

    def __init__(self) -> None:
        self._next = 0

    def take(self) -> int:
        self._next += 1
        return self._next

    @staticmethod
    def code(n: int) -> str:
        return "B" + _base36(n, 9)

    def written(self) -> WrittenKeys:
        """The keys taken so far, to be taken again: items that update stored rows."""
        return WrittenKeys(self._next)


class WrittenKeys(Keys):
    """Keys already written, taken again in order; more than were written is an error."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count

    def take(self) -> int:
        while True:
            if self._next >= self.count:
                raise ValueError(f"only {self.count} keys were written")
            n = super().take()
            # The slots a batch with bad items fills with an invalid or orphan item were
            # never written there: skipped, so that every item is an update.
            if n % 100 not in (INVALID_SLOT, ORPHAN_SLOT):
                return n

    def batches(self, size: int, count: int) -> Batches:
        return make_batches(self, size, count)


def item(n: int, *, bad: bool = False) -> dict[str, Any]:
    """Benefit number ``n``: every field a producer typically sends, audit fields left out."""
    value: dict[str, Any] = {
        "benefit_Code": Keys.code(n),
        "allow_Flat_Tax": n % 2 == 0,
        "benefit_Category": CATEGORIES[n % len(CATEGORIES)],
        "benefit_Description": f"Benefit number {n} for the benchmark",
        "default_Unit_Type": "D",
        "hipaA_Code": f"H{n % 1000:03d}",
        "invalid_Diag_Ex_Code": None,
        "invalid_Procedure_Ex_Code": "PX",
        "invalid_Prov_Type_Ex_Code": None,
        "invalid_Specialty_Ex_Code": None,
        "medicare": "N",
        "pend_Ex_Code": None,
        "pend_Flag": "N",
        "require_Type_Of_Svc": "Y",
    }
    if bad and n % 100 == INVALID_SLOT:
        value["pend_Flag"] = "NO"          # too long: a 400 for this item alone
    elif bad and n % 100 == ORPHAN_SLOT:
        value["benefit_Category"] = "NOPE"  # no such parent: a 404 for this item alone
    return value


@dataclass
class Batches:
    """Ready-made batches: their items and their JSON bodies (made before timing starts)."""

    size: int
    items: list[list[dict[str, Any]]]
    bodies: list[bytes]

    @property
    def item_count(self) -> int:
        return self.size * len(self.items)


def make_batches(keys: Keys, size: int, count: int, *, bad: bool = False) -> Batches:
    items = [[item(keys.take(), bad=bad) for _ in range(size)] for _ in range(count)]
    return Batches(size, items, [orjson.dumps(b) for b in items])


def parent_rows() -> list[tuple[str]]:
    return [(c,) for c in CATEGORIES]


async def seed_parents(conn: Any) -> None:
    """The parent records the clean items point at."""
    await conn.executemany(
        "INSERT INTO vbapi.benefit_category (benefit_category) VALUES ($1) "
        "ON CONFLICT DO NOTHING", parent_rows())


# The widest entity of the API: 655 fields.
WIDEST = "ClaimBatch"


class WideItems:
    """Items of the widest entity, every field set, all under one batch number (whose
    parents exist) and each with its own claim number."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.entity = default_registry().by_name(WIDEST)
        self.base = make_item(self.entity, 7)
        self.path = path_for(self.entity, self.base)

    def make_batches(self, size: int, count: int) -> Batches:
        items = [[{**self.base, "batch_Claim": self.keys.take()} for _ in range(size)]
                 for _ in range(count)]
        return Batches(size, items, [orjson.dumps(b) for b in items])

    async def seed_parents(self, conn: Any) -> None:
        parents = Parents(default_registry())
        parents.need(self.entity, self.base)
        await insert_parents(conn, parents)
