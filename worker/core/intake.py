"""From a request to a batch's plan, pure: route, database, producer, envelope, items.

:func:`prepare_batch` raises a :class:`~worker.core.errors.MessageRejected` for whole-message
errors; the :class:`~worker.core.batch.Plan` it makes says, for each item, either its 400
answer or the validated row the writer must write.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from schemas.models import model_for
from schemas.registry import Registry, Route
from worker.core import errors
from worker.core.batch import Plan
from worker.core.request import Request, check_content_type, decode_body
from worker.core.validation import validate_items
from worker.core.wire import DATABASE_HEADER, MAX_MESSAGE_ID_BYTES, PATH_HEADER, aware
from worker.settings import DatabaseSettings, LimitsSettings, Settings


@dataclass(frozen=True)
class IntakeRules:
    """What intake reads of the configuration, and nothing more."""

    databases: Mapping[str, DatabaseSettings]
    limits: LimitsSettings
    max_clock_skew_s: float

    @classmethod
    def of(cls, settings: Settings) -> IntakeRules:
        return cls(settings.databases, settings.limits, settings.worker.max_clock_skew_s)


def prepare_batch(request: Request, rules: IntakeRules, registry: Registry,
                  received_at: dt.datetime, activity_id: str = "") -> Plan:
    """Check the whole message, then validate every item.

    Raises a MessageRejected subclass for whole-message errors, in the order an HTTP
    server would meet them: headers, database, producer, path, media type, size, body.
    """
    path = request.path
    database = request.database
    if path is None:
        raise errors.MalformedMessage(f"missing header '{PATH_HEADER}'")
    if database is None:
        raise errors.MalformedMessage(f"missing header '{DATABASE_HEADER}'")
    message_id = request.message_id
    if message_id is not None and len(message_id.encode()) > MAX_MESSAGE_ID_BYTES:
        # AMQP carries at most 255 bytes; a longer id can only come another way, and the
        # record keeps no more.
        raise errors.MalformedMessage(
            f"message_id: {len(message_id.encode())} bytes is over the limit of "
            f"{MAX_MESSAGE_ID_BYTES}")
    db_settings = rules.databases.get(database)
    if db_settings is None:
        raise errors.NotFound(f"database '{database}' is not configured")
    if db_settings.producers is not None:
        if not request.user_id:
            raise errors.Unauthenticated(
                f"database '{database}' requires the producer's user_id")
        if request.user_id not in db_settings.producers:
            raise errors.Forbidden(
                f"producer '{request.user_id}' may not write database '{database}'")
    route = registry.route(path)
    if route is None:
        raise errors.NotFound(f"no endpoint matches path '{path}'")
    check_content_type(request.content_type)
    body = decode_body(request.body, request.content_encoding, rules.limits)
    params = parse_path_params(route)
    source_ts = aware(request.timestamp or received_at)
    check_clock_skew(source_ts, received_at, rules.max_clock_skew_s)
    items = validate_items(route.entity, model_for(route.entity), body, params,
                           rules.limits.max_items)
    return Plan(entity=route.entity, database=database, path=path, user_id=request.user_id,
                message_id=request.message_id, source_ts=source_ts, activity_id=activity_id,
                first_delivery=request.first_delivery, ids=items.ids, known=items.known,
                rows=items.rows, dry_run=request.dry_run)


def check_clock_skew(source_ts: dt.datetime, received_at: dt.datetime,
                     max_skew_s: float) -> None:
    """Refuse a timestamp from the future: writes are ordered by it, so one far ahead
    would pin its rows against every later batch (each answered 409).  Measured from the
    first receipt, so that a retry or a replay hours later is judged as it was then."""
    ahead = (source_ts - received_at).total_seconds()
    if ahead > max_skew_s:
        raise errors.MalformedMessage(
            f"timestamp: {source_ts.isoformat()} is {ahead:.0f} s ahead of the worker's "
            f"clock (at most {max_skew_s:g} s allowed)")


def parse_path_params(route: Route) -> dict[str, Any]:
    """Path parameters converted to the type of the item field they bind to."""
    entity = route.entity
    values: dict[str, Any] = {}
    for param, field_name in entity.bindings.items():  # scope parameters are not checked
        raw = route.params[param]
        kind = entity.field_named(field_name).kind
        try:
            values[param] = kind.spec.parse_param(raw)
        except (ValueError, ValidationError) as e:
            raise errors.MalformedMessage(
                f"path parameter {param}: '{raw}' is not a valid {kind.name.lower()}") from e
    return values
