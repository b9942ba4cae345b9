"""The answers one item of a batch can get, and what each means: one table.

The worker answers items with them (worker/core/batch.py takes :class:`ItemStatus` from
here), the JSON Schema of a reply lists them (schemas/jsonschema.py) and the AsyncAPI
document says what each means (schemas/asyncapi/).  Adding a status is adding its row.
"""

from __future__ import annotations

from enum import IntEnum


class ItemStatus(IntEnum):
    """The answers one item of a batch can get, as the API's 207 body spells them, in the
    order the documents list them; each with what it means to a producer."""

    _value_: int
    meaning: str

    def __new__(cls, code: int, meaning: str) -> ItemStatus:
        status = int.__new__(cls, code)
        status._value_ = code
        status.meaning = meaning
        return status

    CREATED = 201, "created"
    UPDATED = 200, "updated"
    # The item itself is invalid, or the database refused it.
    BAD_REQUEST = 400, "invalid"
    NOT_FOUND = 404, "parent missing"
    CONFLICT = 409, "a newer batch wrote the record"
    # No answer could be found for it (a bug).
    FAILED = 500, "unexpected failure of that item"


# The statuses as the reply's JSON Schema lists them.
ITEM_STATUS_CODES = sorted(int(status) for status in ItemStatus)
