"""One dead-lettered batch as read from ``vbapi.dead``: what the worker wrote on it (why,
when, after how many attempts), its properties and its body, readable for a person."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aio_pika.abc import AbstractIncomingMessage

from schemas.registry import default_registry
from worker.core.request import decode_body
from worker.core.wire import (
    ATTEMPTS_HEADER,
    DATABASE_HEADER,
    DEAD_ACTIVITY_HEADER,
    DEAD_LETTERED_AT_HEADER,
    ERROR_DETAIL_HEADER,
    ERROR_STATUS_HEADER,
    ERROR_TITLE_HEADER,
    FIRST_DEATH_REASON_HEADER,
    PATH_HEADER,
    USER_HEADER,
)
from worker.settings import LimitsSettings


@dataclass
class DeadLetter:
    """One dead-lettered batch as read from the queue (position 1 is the head)."""

    id: str
    position: int
    database: str | None
    path: str | None
    entity: str | None
    item_count: int | None
    error_status: int | None
    error_title: str | None
    error_detail: str | None
    attempts: int | None
    dead_lettered_at: str | None
    user_id: str | None
    properties: dict[str, Any]
    headers: dict[str, Any]
    body: bytes
    message: AbstractIncomingMessage = field(repr=False)

    def row(self) -> dict[str, Any]:
        """The summary ``dlq list`` shows."""
        return {"id": self.id, "database": self.database, "path": self.path,
                "entity": self.entity, "items": self.item_count,
                "status": self.error_status, "title": self.error_title,
                "attempts": self.attempts, "dead_lettered_at": self.dead_lettered_at}

    def details(self, limits: LimitsSettings) -> dict[str, Any]:
        """Everything, the body decoded (within ``limits``) as JSON where it is JSON
        (``dlq show``)."""
        return {**self.row(), "position": self.position, "detail": self.error_detail,
                "carried_user_id": self.user_id, "properties": self.properties,
                "headers": self.headers, "body": _readable_body(self, limits)}


def group_by_status(letters: Iterable[DeadLetter]) -> dict[str, int]:
    """Dead letters counted by error status ("none" where the header is missing)."""
    counts: dict[str, int] = {}
    for letter in letters:
        key = str(letter.error_status) if letter.error_status is not None else "none"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def dead_letters(messages: list[AbstractIncomingMessage], limits: LimitsSettings
                 ) -> list[DeadLetter]:
    """The messages of vbapi.dead, read; bodies are decoded within ``limits`` to count
    their items."""
    registry = default_registry()
    seen: dict[str, int] = {}
    letters = []
    for position, message in enumerate(messages, 1):
        headers = {k: _plain(v) for k, v in (message.headers or {}).items()}
        path = _text(headers.get(PATH_HEADER))
        route = registry.route(path) if path else None
        base = (_text(headers.get(DEAD_ACTIVITY_HEADER)) or message.message_id
                or hashlib.sha256(message.body).hexdigest()[:16])
        # Ids must pick one dead letter; a copy (e.g. published twice by hand) gets a suffix.
        seen[base] = seen.get(base, 0) + 1
        letter_id = base if seen[base] == 1 else f"{base}~{seen[base]}"
        letters.append(DeadLetter(
            id=letter_id, position=position, database=_text(headers.get(DATABASE_HEADER)),
            path=path, entity=route.entity.name if route else None,
            item_count=_item_count(message, limits),
            error_status=_int(headers.get(ERROR_STATUS_HEADER)),
            error_title=(_text(headers.get(ERROR_TITLE_HEADER))
                         or _broker_reason(headers)),
            error_detail=_text(headers.get(ERROR_DETAIL_HEADER)),
            attempts=_int(headers.get(ATTEMPTS_HEADER)),
            dead_lettered_at=_text(headers.get(DEAD_LETTERED_AT_HEADER)),
            user_id=_text(headers.get(USER_HEADER)),
            properties=_properties(message), headers=headers, body=message.body,
            message=message))
    return letters


def _broker_reason(headers: dict[str, Any]) -> str | None:
    """A dead letter the broker made (vbapi.requests' dead-letter target: a message over
    its delivery limit) has no error headers of the worker's, only the broker's reason."""
    reason = _text(headers.get(FIRST_DEATH_REASON_HEADER))
    return f"dead-lettered by the broker: {reason}" if reason else None


def _properties(message: AbstractIncomingMessage) -> dict[str, Any]:
    values = {
        "message_id": message.message_id, "correlation_id": message.correlation_id,
        "reply_to": message.reply_to,
        "timestamp": message.timestamp.isoformat() if message.timestamp else None,
        "content_type": message.content_type, "content_encoding": message.content_encoding,
        "type": message.type, "app_id": message.app_id, "priority": message.priority,
        "body_bytes": len(message.body),
    }
    return {k: v for k, v in values.items() if v is not None}


def _decoded_body(letter_body: bytes, encoding: str | None,
                  limits: LimitsSettings) -> bytes | None:
    try:
        return decode_body(letter_body, encoding, limits)
    except Exception:
        return None


def _item_count(message: AbstractIncomingMessage, limits: LimitsSettings) -> int | None:
    raw = _decoded_body(message.body, message.content_encoding, limits)
    try:
        items = orjson.loads(raw) if raw is not None else None
    except orjson.JSONDecodeError:
        return None
    return len(items) if isinstance(items, list) else None


def _readable_body(letter: DeadLetter, limits: LimitsSettings) -> Any:
    raw = _decoded_body(letter.body, letter.message.content_encoding, limits)
    if raw is None:
        return {"undecodable_bytes": len(letter.body)}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")


def _plain(value: Any) -> Any:
    """Header values as JSON-friendly Python values."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(value) if isinstance(value, str) else None
    except ValueError:
        return None
