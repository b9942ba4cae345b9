"""Issue 3, item 12: hostile bodies, headers and properties against the batch logic.

Whatever a producer sends, the pure path (prepare_batch, then the reply body) ends in
exactly one answer: a whole-message 4xx problem, or a 207 with one entry per item, each
item either refused with a 400 that names a field and a reason, or handed to the store.
Never an unhandled exception, never a 500 for bad input.  Bounded to a few seconds.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.registry import default_registry
from tests.support import samples
from worker.amqp import identity
from worker.core import errors, wire
from worker.core.batch import Outcome
from worker.core.intake import IntakeRules, prepare_batch
from worker.core.replies import batch_reply, problem_reply
from worker.core.request import Request
from worker.core.wire import header_text, int_header, time_header
from worker.settings import Settings

REGISTRY = default_registry()
SETTINGS = Settings(
    databases={"demo": {"dsn": "postgresql://127.0.0.1/unused"},
               "guarded": {"dsn": "postgresql://127.0.0.1/unused", "producers": ["acme"]}},
    amqp={"signing_key": "test-signing-key"},  # required by the producers list
    metrics={"port": 0},
    limits={"max_body_bytes": 64_000, "max_decompressed_bytes": 128_000, "max_items": 40})
NOW = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
REFUSAL_STATUSES = {400, 401, 403, 404, 413, 415}
FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

FIELD_NAMES = sorted({f.name for e in REGISTRY.entities for f in e.fields})
PATHS = [samples.BENEFIT_PATH, samples.ARMOR_PATH, samples.FLEX_SCHEDULE_PATH,
         samples.PLAN_YEAR_PATH, samples.EXPORTS_PATH]

# Text as AMQP can carry it (pamqp decodes valid UTF-8 only, so no lone surrogates),
# with NULs, controls and far planes in.
amqp_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
json_text = st.text(max_size=30)  # JSON escapes can carry lone surrogates: keep them


def case_variants(name: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda flips: "".join(c.swapcase() if f else c for c, f in zip(name, flips,
                                                                       strict=True)))


field_name = st.one_of(st.sampled_from(FIELD_NAMES),
                       st.sampled_from(FIELD_NAMES).flatmap(case_variants), json_text)
scalar = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([2**31, -(2**31) - 1, 2**63, -(2**63) - 1, 2**64, 10**30, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    json_text,
    st.sampled_from(["2024-01-01T00:00:00", "2024-13-45T99:99:99", "", "\x00", "Y", "N",
                     "0001-01-01T00:00:00Z", "9999-12-31T23:59:59+14:00", "1e999"]),
)


def render(value: Any) -> str:
    """JSON text, allowing what producers get wrong: NaN, duplicate keys (objects are
    lists of pairs here)."""
    if isinstance(value, tuple):  # an object as (key, value) pairs
        return "{" + ",".join(f"{json.dumps(k)}:{render(v)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(render(v) for v in value) + "]"
    return json.dumps(value, allow_nan=True)


json_value = st.recursive(
    scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.lists(st.tuples(field_name, inner), max_size=4).map(tuple)),
    max_leaves=12)
KEY_NAMES = sorted({k for e in REGISTRY.entities for k in e.key})
item = st.one_of(
    # mostly objects keyed by (variants of) real field names, some valid
    st.lists(st.tuples(field_name, json_value), max_size=12).map(tuple),
    # a real item with hostile values in its key and other fields
    st.tuples(st.sampled_from([samples.benefit(), samples.armor(), samples.flex_schedule(),
                               samples.plan_year(), samples.export()]),
              st.lists(st.tuples(st.one_of(st.sampled_from(KEY_NAMES),
                                           st.sampled_from(FIELD_NAMES)), scalar),
                       min_size=1, max_size=4)).map(
        lambda pair: tuple({**pair[0], **dict(pair[1])}.items())),
    st.sampled_from([samples.benefit(), samples.armor(), samples.flex_schedule(),
                     samples.plan_year(), samples.export()]).map(
        lambda d: tuple(d.items())),
    json_value,
)
json_body = st.lists(item, max_size=12).map(lambda items: render(items).encode())
# Bodies at the edges, drawn now and then here and read every time by tests/unit/
# test_fast_reader.py, whatever the number of examples.
EDGE_BODIES = [b"", b"[", b"null", b"{}", b"[]", b"\xef\xbb\xbf[]", b"[1e999]", b"[-0]",
               b'["\\ud800"]', b'[{"benefit_Code":"\\u0000"}]',
               gzip.compress(b"[" + b"0," * 100_000 + b"0]")]
body = st.one_of(
    json_body,
    json_body,
    json_body,
    st.binary(max_size=300),
    st.integers(1, 3000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(1, 3000).map(lambda depth: b"[" + b'{"a":' * depth + b"1" + b"}" * depth
                             + b"]"),
    st.sampled_from(EDGE_BODIES),
)
header_value = st.one_of(st.none(), amqp_text, amqp_text.map(str.encode), st.integers(),
                         st.floats(), st.booleans(), st.binary(max_size=20),
                         st.lists(st.integers(), max_size=3),
                         st.dictionaries(amqp_text, st.integers(), max_size=2),
                         st.text(min_size=5000, max_size=5000))
path = st.one_of(st.sampled_from(PATHS), header_value,
                 st.sampled_from(PATHS).map(lambda p: p.replace("G1", "%2F%00%zz")),
                 st.sampled_from(PATHS).map(lambda p: p.replace("2024-01-01", "yesterday")),
                 st.sampled_from(PATHS).map(lambda p: p.upper()), st.just("/"))
database = st.one_of(st.sampled_from(["demo", "guarded", "DEMO"]), header_value)
timestamp = st.one_of(st.none(), st.datetimes(), st.datetimes(timezones=st.just(dt.UTC)))


@st.composite
def hostile_envelopes(draw: st.DrawFn) -> Request:
    """Anything in the headers and properties (and the body)."""
    headers: dict[str, Any] = {}
    if (p := draw(path)) is not None:
        headers["path"] = p
    if (d := draw(database)) is not None:
        headers["vbasoftware-database"] = d
    extra = draw(st.dictionaries(amqp_text, header_value, max_size=3))
    return Request(
        body=draw(body), headers={**extra, **headers},
        content_type=draw(st.one_of(st.none(), st.sampled_from(
            ["application/json", "APPLICATION/JSON; charset=utf-8", "text/plain", "",
             ";;;", "application/json;", "application/jsonx"]), amqp_text)),
        content_encoding=draw(st.one_of(st.none(), st.sampled_from(
            ["gzip", "GZIP", " gzip ", "identity", "br", ""]), amqp_text)),
        message_id=draw(st.one_of(st.none(), amqp_text)),
        user_id=draw(st.one_of(st.none(), st.just("acme"), amqp_text)),
        timestamp=draw(timestamp))


@st.composite
def hostile_bodies(draw: st.DrawFn) -> Request:
    """A well-addressed message (a real path, the database) with anything as its body."""
    raw = draw(body)
    gzipped = draw(st.booleans()) and not raw.startswith(b"\x1f\x8b")
    return Request(
        body=gzip.compress(raw) if gzipped else raw,
        headers={"path": draw(st.sampled_from(PATHS)), "vbasoftware-database": "demo"},
        content_type=draw(st.sampled_from([None, "application/json"])),
        content_encoding="gzip" if gzipped or raw.startswith(b"\x1f\x8b") else None,
        message_id=draw(st.one_of(st.none(), amqp_text)),
        user_id=draw(st.one_of(st.none(), amqp_text)), timestamp=draw(timestamp))


# A problem names a field (the sent name, or its canonical one) and says why.
PROBLEM = re.compile(r"^[^\n]*?: \S", re.DOTALL)


@FUZZ
@given(hostile_envelopes())
def test_any_message_gets_exactly_one_answer(request: Request) -> None:
    answer_once(request)


@FUZZ
@given(hostile_bodies())
def test_any_body_gets_exactly_one_answer_per_item(request: Request) -> None:
    answer_once(request)


def answer_once(request: Request) -> None:
    try:
        batch = prepare_batch(request, IntakeRules.of(SETTINGS), REGISTRY, NOW, "A")
    except errors.MessageRejected as e:
        assert e.status in REFUSAL_STATUSES
        reply = orjson.loads(problem_reply(e, request.path, "A"))
        assert reply["data"] is None and reply["error"]["status"] == e.status
        assert reply["error"]["detail"]
        return

    count = len(batch.known)
    assert count <= SETTINGS.limits.max_items
    to_write = [index for index, _ in batch.rows]
    assert to_write == sorted(set(to_write))
    for index, outcome in enumerate(batch.known):
        # each item: answered already (400), or to be written, never both nor neither
        assert (outcome is None) == (index in to_write)
        if outcome is not None:
            assert outcome.status == 400
            for problem in outcome.body.split("; "):
                assert problem.startswith("item must be a JSON object") or \
                    PROBLEM.match(problem), problem
    written = Outcome(batch)
    for index in to_write:  # as the store would
        written.answer(index, 201, "Created")
    reply = orjson.loads(batch_reply(batch, written))
    assert len(reply["data"]) == count and reply["error"] is None
    for entry in reply["data"]:
        assert [k["key"] for k in entry["id"]] == list(batch.entity.key)


@FUZZ
@given(st.dictionaries(st.sampled_from(["x-upsert-attempts", "x-delivery-count",
                                        "x-upsert-received-at", "path",
                                        identity.USER_HEADER, identity.SIGNATURE_HEADER]),
                       header_value),
       st.binary(max_size=50))
def test_hostile_header_values_are_read_without_failing(headers: dict[str, Any],
                                                        payload: bytes) -> None:
    assert int_header(headers, "x-upsert-attempts") >= 0
    assert int_header(headers, "x-delivery-count") >= 0
    received = time_header(headers, "x-upsert-received-at")
    assert received is None or received.tzinfo is not None
    assert header_text(headers, "path") is None or isinstance(header_text(headers, "path"), str)
    vouched = identity.verified(b"key", headers, envelope(payload))
    # Without the key nobody forges a name or a receipt time.
    assert vouched is None


def envelope(body: bytes = b"[]", **changed: Any) -> identity.Envelope:
    fields: dict[str, Any] = {"path": "/p", "database": "demo", "message_id": "m1",
                              "timestamp": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                              "body": body}
    return identity.Envelope(**{**fields, **changed})


def test_a_signed_name_and_receipt_time_are_carried_and_tampered_ones_are_not() -> None:
    """Issue 18, item 6: the signature covers message_id and timestamp too (and the first
    receipt time, which orders a replay's writes), so a signed pair lifted onto another
    batch, or a receipt time moved, is not believed."""
    received = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    signed = identity.sign(b"key", "acme", received, envelope())
    assert identity.verified(b"key", signed, envelope()) == identity.Vouched("acme", received)
    anonymous = identity.sign(b"key", None, received, envelope())
    assert identity.verified(b"key", anonymous, envelope()) == identity.Vouched(None, received)
    for other in (envelope(b"[1]"), envelope(message_id="m2"), envelope(message_id=None),
                  envelope(timestamp=dt.datetime(2027, 1, 1, tzinfo=dt.UTC)),
                  envelope(timestamp=None), envelope(path="/q"), envelope(database="x")):
        assert identity.verified(b"key", signed, other) is None, other
    for forged in ({**signed, identity.USER_HEADER: "mallory"},
                   {**signed, wire.RECEIVED_AT_HEADER: "2030-01-01T00:00:00+00:00"},
                   {k: v for k, v in signed.items() if k != identity.USER_HEADER},
                   {**anonymous, identity.USER_HEADER: "mallory"},
                   {**signed, identity.SIGNATURE_HEADER: "é" * 64}):
        assert identity.verified(b"key", forged, envelope()) is None
    assert identity.verified(b"other key", signed, envelope()) is None
