"""The copy of a message the worker sends on itself: to a retry queue, to ``vbapi.dead``, or
back to ``vbapi`` on replay."""

from __future__ import annotations

from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage


def republished(message: AbstractIncomingMessage, headers: dict[str, Any]) -> aio_pika.Message:
    """The message with its body and properties and new headers, as the worker sends it on
    (to a retry queue, to ``vbapi.dead``, or back to ``vbapi`` on replay): persistent, and
    with no ``user_id`` (the broker accepts only the publishing connection's own) nor
    ``expiration`` (it must not vanish)."""
    return aio_pika.Message(
        body=message.body, headers=headers, content_type=message.content_type,
        content_encoding=message.content_encoding, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=message.priority, correlation_id=message.correlation_id,
        reply_to=message.reply_to, message_id=message.message_id,
        timestamp=message.timestamp, type=message.type, app_id=message.app_id)
