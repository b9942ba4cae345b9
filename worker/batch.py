"""The batch logic, pure: a request's bytes and headers in, a validated batch out.

No I/O here: :func:`prepare_batch` decodes the body (gzip too, bounded), routes the path,
resolves the database, checks the producer, and validates every item, raising a
:class:`~worker.errors.MessageRejected` for whole-message errors.  What comes out says,
for each item, either its 400 answer or the validated row the store must write.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import pydantic_core
from pydantic import ValidationError

from schemas.entity import Entity, Kind
from schemas.models import EntityModel, Unvalidated, build_model
from schemas.registry import Registry, Route
from worker import errors
from worker.settings import Settings

PATH_HEADER = "path"
DATABASE_HEADER = "vbasoftware-database"


@dataclass(frozen=True)
class Request:
    """What the worker reads from one AMQP message, independent of the client library."""

    body: bytes
    headers: Mapping[str, Any]
    content_type: str | None = None
    content_encoding: str | None = None
    message_id: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    user_id: str | None = None
    timestamp: dt.datetime | None = None
    # Never delivered before (not redelivered, not a retry): there can be no recorded
    # reply unless a producer sent the same message_id twice, which the record's unique
    # key still catches.  Lets the store skip its lookup.
    first_delivery: bool = False

    @property
    def path(self) -> str | None:
        return header_text(self.headers, PATH_HEADER)

    @property
    def database(self) -> str | None:
        return header_text(self.headers, DATABASE_HEADER)


def header_text(headers: Mapping[str, Any], name: str) -> str | None:
    """A header as text (AMQP long strings may arrive as bytes), or None if absent/empty."""
    value = headers.get(name)
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if value is None:
        return None
    value = str(value)
    return value or None


@dataclass
class ItemOutcome:
    status: int
    body: str


@dataclass
class Batch:
    """A validated batch: per item, its answer so far or the row to write."""

    entity: Entity
    database: str
    path: str
    user_id: str | None
    message_id: str | None
    source_ts: dt.datetime
    ids: list[list[dict[str, Any]]]
    outcomes: list[ItemOutcome | None]
    # (item index, validated row keyed by canonical JSON names), in request order
    rows: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    first_delivery: bool = False

    def answer(self, index: int, status: int, body: str) -> None:
        self.outcomes[index] = ItemOutcome(status, body)


class Validators:
    """The pydantic validators of every entity, each built the first time its entity is
    used: building all of them would cost seconds and tens of megabytes at start."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._models: dict[str, EntityModel] = {}

    def model(self, entity: Entity) -> EntityModel:
        model = self._models.get(entity.name)
        if model is None:
            model = self._models[entity.name] = build_model(entity)
        return model


def prepare_batch(request: Request, settings: Settings, validators: Validators,
                  received_at: dt.datetime) -> Batch:
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
    db_settings = settings.databases.get(database)
    if db_settings is None:
        raise errors.NotFound(f"database '{database}' is not configured")
    if db_settings.producers is not None:
        if not request.user_id:
            raise errors.Unauthenticated(
                f"database '{database}' requires the producer's user_id")
        if request.user_id not in db_settings.producers:
            raise errors.Forbidden(
                f"producer '{request.user_id}' may not write database '{database}'")
    route = validators.registry.route(path)
    if route is None:
        raise errors.NotFound(f"no endpoint matches path '{path}'")
    check_content_type(request.content_type)
    body = decode_body(request.body, request.content_encoding, settings)
    params = parse_path_params(route)
    source_ts = request.timestamp or received_at
    if source_ts.tzinfo is None:
        source_ts = source_ts.replace(tzinfo=dt.UTC)
    batch = validate_items(route.entity, validators.model(route.entity), body, params,
                           settings.limits.max_items, database=database, path=path,
                           user_id=request.user_id, message_id=request.message_id,
                           source_ts=source_ts)
    batch.first_delivery = request.first_delivery
    return batch


def check_content_type(content_type: str | None) -> None:
    if not content_type:
        return
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise errors.UnsupportedMediaType(
            f"content type '{content_type}' is not supported; use application/json")


def decode_body(body: bytes, content_encoding: str | None, settings: Settings) -> bytes:
    """The JSON bytes: size-checked, and inflated for gzip without ever exceeding the limit."""
    limits = settings.limits
    if len(body) > limits.max_body_bytes:
        raise errors.TooLarge(
            f"body of {len(body)} bytes is over the limit of {limits.max_body_bytes}")
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise errors.UnsupportedMediaType(
            f"content encoding '{content_encoding}' is not supported; use gzip or none")
    # Inflate at most one byte past the limit: a gzip bomb is refused, never inflated.
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limits.max_decompressed_bytes + 1)
    except zlib.error as e:
        raise errors.MalformedMessage(f"body is not valid gzip: {e}") from e
    if len(out) > limits.max_decompressed_bytes:
        raise errors.TooLarge(
            f"decompressed body is over the limit of {limits.max_decompressed_bytes} bytes")
    if not inflater.eof:
        raise errors.MalformedMessage("body is not valid gzip: truncated stream")
    return out


def parse_path_params(route: Route) -> dict[str, Any]:
    """Path parameters converted to the type of the item field they bind to."""
    entity = route.entity
    values: dict[str, Any] = {}
    for param, field_name in entity.bindings.items():  # scope parameters are not checked
        raw = route.params[param]
        kind = entity.field_named(field_name).kind
        if kind is Kind.TEXT:
            values[param] = raw
            continue
        try:
            values[param] = _PARAM_PARSERS[kind](raw)
        except (ValueError, ValidationError) as e:
            raise errors.MalformedMessage(
                f"path parameter {param}: '{raw}' is not a valid {kind.name.lower()}") from e
    return values


def _parse_datetime(raw: str) -> dt.datetime:
    # Path parameters are lenient: a bare date means midnight.
    value = dt.datetime.fromisoformat(raw)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


_PARAM_PARSERS: dict[Kind, Any] = {
    Kind.INTEGER: int,
    Kind.DECIMAL: float,
    Kind.BOOLEAN: lambda raw: {"true": True, "false": False}[raw.lower()],
    Kind.DATETIME: _parse_datetime,
}


def validate_items(entity: Entity, model: EntityModel, body: bytes, params: dict[str, Any],
                   max_items: int, *, database: str, path: str, user_id: str | None,
                   message_id: str | None, source_ts: dt.datetime) -> Batch:
    """Validate the JSON body item by item into a :class:`Batch`.

    The whole body is validated in one pydantic call; only the items that fail it are
    looked at again, one by one, to name each offending field.
    """
    refuse_too_many_items(entity, body, max_items)
    try:
        rows: list[Any] = model.batch.validate_json(body)
    except ValidationError as e:  # items never fail the body: the body itself is wrong
        if any(err["type"] == "json_invalid" for err in e.errors()):
            raise errors.MalformedMessage(
                f"body is not valid JSON: {e.errors()[0]['msg']}") from e
        raise errors.MalformedMessage("body must be a JSON array of items") from e
    if len(rows) > max_items:
        raise errors.TooLarge(f"{len(rows)} items is over the limit of {max_items}")

    failed = _validate_failures(model, rows)
    batch = Batch(entity=entity, database=database, path=path, user_id=user_id,
                  message_id=message_id, source_ts=source_ts,
                  ids=[], outcomes=[None] * len(rows))
    check_nul = b"\\u0000" in body
    datetime_fields = [f.name for f in entity.fields if f.kind is Kind.DATETIME]
    checked = check_nul or bool(entity.bindings)
    key = entity.key
    for index, row in enumerate(rows):
        problems = failed.get(index)
        if problems is None:
            _assume_utc(row, datetime_fields)
            if checked:
                problems = _binding_problems(entity, row, params)
                if check_nul:
                    problems += _nul_problems(row)
            if not problems:
                # A valid item's text and int32 key values are echoed as they are;
                # date-times are put back as sent below.
                batch.ids.append([{"key": k, "value": row[k]} for k in key])
                batch.rows.append((index, row))
                continue
        batch.ids.append(_item_id(entity, row))
        batch.answer(index, 400, "; ".join(problems))
    sent_as_text = [i for i, f in enumerate(entity.key_fields) if f.kind is Kind.DATETIME]
    if sent_as_text:
        try:
            items = orjson.loads(body)
        except orjson.JSONDecodeError:  # valid JSON orjson refuses: a number beyond float
            items = json.loads(body)
        _echo_as_sent(batch.ids, items, sent_as_text)
    return batch


def _echo_as_sent(ids: list[list[dict[str, Any]]], items: list[Any],
                  positions: list[int]) -> None:
    """Put the key values at ``positions`` back as the items sent them: a date-time key
    is echoed in the reply as its original text, not as the instant it was parsed to."""
    for item_id, item in zip(ids, items, strict=True):
        for at in positions:
            name = item_id[at]["key"]
            value = _sent(item, name)
            item_id[at]["value"] = value if isinstance(value, (str, int, float, bool)) else None


def _sent(item: Any, name: str) -> Any:
    if not isinstance(item, dict):
        return None
    if name in item:
        return item[name]
    lowered = name.lower()
    return next((v for k, v in item.items() if k.lower() == lowered), None)


_JSON_SPACE = re.compile(r"[ \t\n\r]*")


def refuse_too_many_items(entity: Entity, body: bytes, max_items: int) -> None:
    """Refuse a body with more items than the limit before validating it.

    Validation parses the whole body first and keeps an error per bad value: a body of a
    few million tiny items (``[{},{},...]``, ``[1,1,...]``) would take gigabytes.  Two
    byte counts bound the values a body can hold; only a body over those bounds (which no
    batch within the limits reaches, bar strings full of braces and commas) is counted
    exactly, item by item, stopping one past the limit.  Malformed JSON is left to the
    validation to report.
    """
    if (body.count(b"{") <= max_items
            and body.count(b",") < max_items * (len(entity.fields) + 1)):
        return
    try:
        text = body.decode("utf-8")
        decoder = json.JSONDecoder()
        at = _JSON_SPACE.match(text).end()  # type: ignore[union-attr]
        if text[at:at + 1] != "[":
            return
        at = _JSON_SPACE.match(text, at + 1).end()  # type: ignore[union-attr]
        items = members = 0
        while text[at:at + 1] != "]":
            value, at = decoder.raw_decode(text, at)
            items += 1
            members += len(value) if isinstance(value, dict) else 0
            if items > max_items:
                # Counting stops here: the body holds this many items or more.
                raise errors.TooLarge(f"at least {items} items is over the limit of "
                                      f"{max_items}")
            at = _JSON_SPACE.match(text, at).end()  # type: ignore[union-attr]
            if text[at:at + 1] == ",":
                at = _JSON_SPACE.match(text, at + 1).end()  # type: ignore[union-attr]
            elif text[at:at + 1] != "]":
                return
    except (ValueError, RecursionError):
        return
    if members > max_items * len(entity.fields):
        raise errors.TooLarge(f"{members} fields in {items} items is over the limit of "
                              f"{max_items} items of {len(entity.fields)} fields")


def _validate_failures(model: EntityModel, rows: list[Any]) -> dict[int, list[str]]:
    """Validate the items that failed the body's validation again, one by one, names
    matched case-insensitively as the original API does.  Each is replaced in ``rows`` by
    its validated dict (when only its names' case was off) or by the item as sent; returns
    the problems of those that still fail, by index."""
    failed: dict[int, list[str]] = {}
    for index, row in enumerate(rows):
        if isinstance(row, Unvalidated):
            rows[index], problems = _validate_one(model, row.value)
            if problems:
                failed[index] = problems
    return failed


def _validate_one(model: EntityModel, item: Any) -> tuple[Any, list[str]]:
    """One item, names matched case-insensitively: (the row, its problems)."""
    if not isinstance(item, dict):
        return {}, [f"item must be a JSON object, not {_json_type(item)}"]
    canonical: dict[str, Any] = {}
    problems: list[str] = []
    for name, value in item.items():
        target = model.canonical.get(name.lower())
        if target is None:
            problems.append(f"{name}: unknown field")
        elif target in canonical:
            problems.append(f"{name}: duplicate of field {target}")
        else:
            canonical[target] = value
    try:
        row = model.item.validate_json(pydantic_core.to_json(canonical))
    except ValidationError as e:
        problems += [f"{_loc(err['loc'])}: {err['msg']}" for err in e.errors()]
        return canonical, problems
    return (canonical if problems else row), problems


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "item"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "an array"}.get(type(value), type(value).__name__)


def _binding_problems(entity: Entity, row: dict[str, Any], params: dict[str, Any]) -> list[str]:
    problems = []
    for param, field_name in entity.bindings.items():
        value = row.get(field_name)
        if value != params[param]:
            problems.append(f"{field_name}: {_show(value)} does not match path {param} "
                            f"{_show(params[param])}")
    return problems


def _assume_utc(row: dict[str, Any], names: list[str]) -> None:
    """Date-times without an offset are taken as UTC, so that they compare and store alike."""
    for name in names:
        value = row.get(name)
        if value is not None and value.tzinfo is None:
            row[name] = value.replace(tzinfo=dt.UTC)


def _show(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return f"'{value.isoformat()}'"
    return repr(value) if not isinstance(value, str) else f"'{value}'"


def _nul_problems(row: dict[str, Any]) -> list[str]:
    return [f"{name}: must not contain a NUL character"
            for name, value in row.items() if isinstance(value, str) and "\x00" in value]


def _item_id(entity: Entity, row: Any) -> list[dict[str, Any]]:
    """The key fields in key order with their JSON names and the values as sent."""
    values = row if isinstance(row, dict) else {}
    out = []
    for key in entity.key:
        value = values.get(key)
        # Keys are text or integer fields; a scalar sent with another JSON type is still
        # echoed as sent, anything else (an array, an object) as null.
        if not isinstance(value, (str, int, float, bool)):
            value = None
        elif isinstance(value, int) and not -(2**63) <= value < 2**64:
            # The reply's JSON writer takes 64-bit integers only: a bigger one is echoed
            # as the (approximate) number it is, or null beyond any float.
            value = float(value) if abs(value) < 10**308 else None
        out.append({"key": key, "value": value})
    return out
