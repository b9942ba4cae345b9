"""Issue 12: the fast reader (schemas/fast.py) is exactly as strict as the pydantic models.

Validation must not change by a hair for being faster.  So every body here is read twice,
by the worker's read (the fast reader where it may, pydantic for the rest) and by pydantic
alone, and the two must agree item by item: the same values of the same types (date-times
with the same offset), the same items left to be looked at again, the same whole-body
refusal.  Values are generated per kind around the edges where two JSON readers differ:
number spellings, fractions of seconds, offsets, escapes, lengths in code points, nesting.
The listed edge values (and the fuzz test's edge bodies) are also read every one of them in
every field, so that they are checked whatever the number of examples: the profile's
(tests/conftest.py: fewer when the unit tier runs on its own, more in the full run).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.entity import Entity, Field
from schemas.fast import fast_reader_for
from schemas.kinds import Kind
from schemas.models import Unvalidated, model_for
from schemas.registry import default_registry
from tests.unit.test_fuzz_batch import EDGE_BODIES
from tests.unit.test_fuzz_batch import body as hostile_body
from worker.core import errors
from worker.core.reading import read_items, read_with_pydantic, refuse_too_many_items

MAX_ITEMS = 10_000
# As many examples as the profile says (tests/conftest.py).
DIFF = settings(deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# One field of every kind the fast reader takes, required and optional, nullable or not.
PROBE = Entity(
    name="Probe", table="probe", path="/probe-batch", key=("code",),
    fields=(
        Field("code", Kind.TEXT, required=True, nullable=False, min_length=1, max_length=3),
        Field("note", Kind.TEXT, max_length=5),
        Field("count", Kind.INTEGER, required=True, nullable=False),
        Field("size", Kind.INTEGER),
        Field("flag", Kind.BOOLEAN),
        Field("amount", Kind.DECIMAL),
        Field("at", Kind.DATETIME, required=True, nullable=False),
        Field("entry_Date", Kind.DATETIME, nullable=False),  # may be left out, not null
    ))
FIELDS = {f.name: f for f in PROBE.fields}


def _escaped(text: str) -> str:
    """A JSON string spelling every character as a \\u escape."""
    return '"' + "".join(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else
                         json.dumps(c)[1:-1] for c in text) + '"'


NUMBER_EDGES = ["-0", "-0.0", "0e0", "1E400", "-1e400", "1e-400", "NaN", "Infinity", "01",
                "1.", ".5", "+1", "2147483647", "2147483648", "-2147483648", "-2147483649",
                "1.0", "9007199254740993", "18446744073709551616", "1.7976931348623157e308",
                "1.7976931348623159e308", "4.9e-324"]
ZONE_EDGES = ["", "Z", "z", "+00:00", "-00:00", "+01", "+0100"]
STRING_EDGES = ['"\\ud800"', '"\\udc00a"', '"a\tb"', '"\\q"', '"\\u0000"', '""',
                '"\U0001f600\U0001f600\U0001f600"', '"\U0001f600" ']
OTHER_EDGES = ["true", "false", "null", "[]", "{}", '[{"a":1}]']
DATETIME_EDGES = [
    *(json.dumps(f"2024-01-02{sep}03:04:05{zone}") for sep in "Tt _" for zone in ZONE_EDGES),
    *map(json.dumps, ["2024-01-02", "03:04", "03:04:05", "20240101", "2024-01-02T03:04",
                      "2024-01-02T03:04:05.", "2024-01-02T03:04:05,5Z",
                      "2024-01-02T03:04:05.1234567890Z", "0000-01-01T00:00:00Z",
                      "0001-01-01T00:00:00Z", "9999-12-31T23:59:59+00:00",
                      "2024-02-30T00:00:00Z", "2024-01-02T24:00:00Z", "2024-01-02T03:04:60Z",
                      "2024-01-02T03:04:05+24:00", "2024-01-02T03:04:05+01:60"]),
    '"2024\\u002d01-02T03:04:05Z"']
digits = st.text("0123456789", min_size=1, max_size=25)
number_text = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-(2**70), 2**70).map(str),
    st.tuples(st.sampled_from(["", "-"]), digits, st.sampled_from(["", "."]), digits,
              st.sampled_from(["", "e", "E", "e+", "e-"]), st.integers(0, 400)).map(
        lambda p: p[0] + p[1] + (p[2] + p[3] if p[2] else "")
        + (p[4] + str(p[5]) if p[4] else "")),
    st.sampled_from(NUMBER_EDGES),
)


@st.composite
def datetime_text(draw: st.DrawFn) -> str:
    year = draw(st.one_of(st.integers(0, 10000).map(lambda y: f"{y:04d}"),
                          st.sampled_from(["2024", "1970", "0001", "9999"])))
    date = f"{year}-{draw(st.integers(0, 13)):02d}-{draw(st.integers(0, 32)):02d}"
    sep = draw(st.sampled_from(["T", "t", " ", "_", "T", "T"]))
    time = f"{draw(st.integers(0, 25)):02d}:{draw(st.integers(0, 61)):02d}"
    if draw(st.integers(0, 5)):
        time += f":{draw(st.integers(0, 61)):02d}"
        if draw(st.booleans()):
            time += draw(st.sampled_from([".", ","])) + draw(
                st.text("0123456789", min_size=0, max_size=10))
    zone = draw(st.one_of(
        st.sampled_from(ZONE_EDGES),
        st.tuples(st.sampled_from("+-"), st.integers(0, 25), st.integers(0, 61),
                  st.booleans()).map(
            lambda z: f"{z[0]}{z[1]:02d}{':' if z[3] else ''}{z[2]:02d}")))
    text = draw(st.sampled_from([date + sep + time + zone, date, time, year + "0101"]))
    if draw(st.integers(0, 9)) == 0:  # a digit or a dot spelled as an escape
        return _escaped(text)
    return json.dumps(text)


string_text = st.one_of(
    st.text(max_size=7).map(json.dumps),
    st.text(max_size=7).map(lambda t: json.dumps(t, ensure_ascii=False)),
    st.text(max_size=6).map(_escaped),
    st.sampled_from(STRING_EDGES),
)
any_text = st.one_of(number_text, datetime_text(), string_text, st.sampled_from(OTHER_EDGES))
value_text = {
    Kind.TEXT: st.one_of(string_text, any_text),
    Kind.INTEGER: st.one_of(number_text, any_text),
    Kind.BOOLEAN: any_text,
    Kind.DECIMAL: st.one_of(number_text, number_text, any_text),
    Kind.DATETIME: st.one_of(datetime_text(), datetime_text(), any_text),
}


@st.composite
def probe_item(draw: st.DrawFn) -> str:
    """An item of PROBE as JSON text: half of them valid, the others with a value or two
    from the edges; some fields left out, now and then a member named in another case, a
    duplicate or an unknown one."""
    edgy = draw(st.booleans())
    members = []
    for name, field in FIELDS.items():
        if not field.required and draw(st.integers(0, 3)) == 0:
            continue
        if edgy and draw(st.integers(0, 3)) == 0:
            value = draw(value_text[field.kind])
        else:
            value = draw(_valid_value(field))
        members.append(f"{json.dumps(name)}:{value}")
    if edgy and draw(st.integers(0, 5)) == 0:
        members.append(draw(st.sampled_from(['"CODE":"a"', '"code":"b"', '"other":1',
                                             '"count":1.5'])))
    members = draw(st.permutations(members))
    space = draw(st.sampled_from(["", " ", "\n\t", "\r\n"]))
    return "{" + space + ("," + space).join(members) + space + "}"


def _valid_value(field: Field) -> st.SearchStrategy[str]:
    match field.kind:
        case Kind.TEXT:
            return st.text(min_size=1, max_size=field.max_length or 5).map(json.dumps)
        case Kind.INTEGER:
            return st.integers(-(2**31), 2**31 - 1).map(str)
        case Kind.BOOLEAN:
            return st.sampled_from(["true", "false"])
        case Kind.DECIMAL:
            return st.floats(allow_nan=False, allow_infinity=False).map(repr)
        case _:
            offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(
                lambda minutes: dt.timezone(dt.timedelta(minutes=minutes)))
            return st.datetimes(timezones=st.one_of(st.none(), st.just(dt.UTC), offsets)).map(
                lambda d: json.dumps(d.isoformat()))


probe_body = st.lists(probe_item(), max_size=8).map(lambda items: ("[" + ",".join(items)
                                                                    + "]").encode())


def _same_value(a: Any, b: Any) -> bool:
    if type(a) is not type(b) or a != b:
        return False
    return not isinstance(a, dt.datetime) or a.utcoffset() == b.utcoffset()


def _outcome(entity: Entity, read: Any) -> Any:
    """What a read says of each item, comparable: its values in field order, or the item
    as sent for one that failed."""
    names = [f.name for f in entity.fields]
    out = []
    for item in read:
        if item.__class__ is Unvalidated:
            out.append(("unvalidated", item.value))
        elif item.__class__ is tuple:
            out.append(("valid", item))
        else:
            out.append(("valid", tuple(map(item.get, names))))
    return out


def _read(read: Any, entity: Entity, body: bytes) -> Any:
    try:
        return _outcome(entity, read(body))
    except errors.MessageRejected as e:
        return ("refused", type(e), e.detail)


def assert_same_reading(entity: Entity, body: bytes) -> None:
    model = model_for(entity)
    fast = _read(lambda b: read_items(entity, model, b, MAX_ITEMS), entity, body)
    slow = _read(lambda b: read_with_pydantic(model, b), entity, body)
    if isinstance(fast, tuple) or isinstance(slow, tuple):  # a whole-body refusal
        assert fast == slow
        return
    assert len(fast) == len(slow)
    for (how, got), (expected_how, expected) in zip(fast, slow, strict=True):
        assert how == expected_how, (body, got, expected)
        if how == "unvalidated":
            assert got == expected or json.dumps(got) == json.dumps(expected)
        else:
            assert all(_same_value(a, b) for a, b in zip(got, expected, strict=True)), \
                (body, got, expected)


@DIFF
@given(probe_body)
def test_the_fast_reader_reads_every_probe_body_as_pydantic_does(body: bytes) -> None:
    assert_same_reading(PROBE, body)


@DIFF
@given(hostile_body)
def test_the_fast_reader_reads_hostile_bodies_as_pydantic_does(body: bytes) -> None:
    for entity in SEED_ENTITIES:
        assert_same_reading(entity, body)


VALID_ITEM = {"code": '"a"', "count": "1", "at": '"2024-01-02T03:04:05Z"'}


@pytest.mark.parametrize("value", [*NUMBER_EDGES, *STRING_EDGES, *OTHER_EDGES,
                                   *DATETIME_EDGES])
def test_every_edge_value_in_every_field_is_read_as_pydantic_does(value: str) -> None:
    """Each listed edge value in each field of an item otherwise valid: one item a field,
    and all of them in one body, in compact and in spaced-out JSON."""
    items = ["{" + ",".join(f'"{name}":{text}'
                            for name, text in {**VALID_ITEM, field: value}.items()) + "}"
             for field in FIELDS]
    assert_same_reading(PROBE, ("[" + ",".join(items) + "]").encode())
    assert_same_reading(PROBE, ("[ " + " , ".join(items) + " ]").encode())


def test_every_edge_body_is_read_as_pydantic_does() -> None:
    for body in EDGE_BODIES:
        for entity in SEED_ENTITIES:
            assert_same_reading(entity, body)


SEED_ENTITIES = [e for e in default_registry().entities
                 if e.name in ("Benefit", "Armor", "FlexSchedule", "PlanYear")]


@pytest.mark.parametrize("text, fast", [
    ('"2024-01-02T03:04:05.123456Z"', True),
    # pydantic truncates a seventh digit, msgspec would round: pydantic reads these
    ('"2024-01-02T03:04:05.1234567Z"', False),
    ('"2024-01-02T03:04:05\\u002e1234567Z"', False),
])
def test_long_fractions_of_a_second_are_left_to_pydantic(text: str, fast: bool) -> None:
    reader = fast_reader_for(PROBE)
    assert reader is not None
    body = f'[{{"code":"a","count":1,"at":{text}}}]'.encode()
    assert reader.may_read(body) is fast
    assert_same_reading(PROBE, body)
    (row,) = read_items(PROBE, model_for(PROBE), body, MAX_ITEMS)
    assert row.__class__ is (tuple if fast else dict)
    assert read_with_pydantic(model_for(PROBE), body)[0]["at"].microsecond == 123456


def test_an_entity_with_arrays_of_objects_has_no_fast_reader() -> None:
    # msgspec nests deeper than pydantic's parser allows: only pydantic reads these
    with_arrays = [e for e in default_registry().entities
                   if any(f.kind is Kind.OBJECTS for f in e.fields)]
    assert with_arrays and all(fast_reader_for(e) is None for e in with_arrays)
    assert fast_reader_for(SEED_ENTITIES[0]) is not None


def test_a_clean_body_is_read_by_the_fast_reader_and_a_bad_item_by_pydantic() -> None:
    good = '{"code":"a","count":1,"at":"2024-01-02T03:04:05Z"}'
    bad = '{"code":"toolong","count":1,"at":"2024-01-02T03:04:05Z"}'
    model = model_for(PROBE)
    clean = read_items(PROBE, model, f"[{good},{good}]".encode(), MAX_ITEMS)
    assert [item.__class__ for item in clean] == [tuple, tuple]
    mixed = read_items(PROBE, model, f"[{good},{bad},{good}]".encode(), MAX_ITEMS)
    assert [item.__class__ for item in mixed] == [tuple, Unvalidated, tuple]
    assert mixed[0] == ("a", None, 1, None, None, None,
                        dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC), None)


@settings(DIFF, max_examples=max(settings.default.max_examples // 2, 20))
@given(probe_body, st.integers(1, 6))
def test_bodies_over_the_item_limit_are_refused_as_before(body: bytes, limit: int) -> None:
    """A short body of clean items is not counted before it is read: the answer, a 413
    included, is still the one counting first gives."""
    model = model_for(PROBE)

    def counted_first(b: bytes) -> Any:
        refuse_too_many_items(PROBE, b, limit)
        items = read_with_pydantic(model, b)
        if len(items) > limit:
            raise errors.TooLarge(f"{len(items)} items is over the limit of {limit}")
        return items

    def as_the_worker(b: bytes) -> Any:
        items = read_items(PROBE, model, b, limit)
        if len(items) > limit:
            raise errors.TooLarge(f"{len(items)} items is over the limit of {limit}")
        return items

    got, expected = _read(as_the_worker, PROBE, body), _read(counted_first, PROBE, body)
    if isinstance(got, tuple) or isinstance(expected, tuple):
        assert got == expected
    else:
        assert [how for how, _ in got] == [how for how, _ in expected]


def test_no_clean_item_is_shorter_than_the_reader_assumes() -> None:
    """The bound that skips counting: every entity's shortest clean item is at least
    min_item_bytes long, so a body within max_items x that holds at most max_items."""
    shortest = {Kind.TEXT: lambda f: "x" * (f.min_length or 0), Kind.INTEGER: lambda f: 0,
                Kind.BOOLEAN: lambda f: True, Kind.DECIMAL: lambda f: 0,
                Kind.DATETIME: lambda f: "2024-01-01T00:00:00"}
    for entity in default_registry().entities:
        reader = fast_reader_for(entity)
        if reader is None:
            continue
        item = {f.name: shortest[f.kind](f) for f in entity.fields if f.required}
        text = orjson.dumps(item)
        assert reader.read_clean(b"[" + text + b"]") is not None, entity.name
        assert len(text) >= reader.min_item_bytes, entity.name


_GOOD = b'{"code":"a","count":1,"at":"2024-01-02T03:04:05Z"}'


@pytest.mark.parametrize("body", [
    # what JSON calls whitespace, and what it does not, around and inside items
    *(ws + b"[" + _GOOD + b"]" for ws in (b" \t\r\n", b"\x0c", b"\x0b", b"\xc2\xa0",
                                          b"\xef\xbb\xbf")),
    *(b"[" + _GOOD + ws + b"]" for ws in (b"\n", b"\x0c", b"\x00")),
    # bytes that are not UTF-8, in a value and in a name
    b'[{"code":"\xff","count":1,"at":"2024-01-02T03:04:05Z"}]',
    b'[{"code":"\xed\xa0\x80","count":1,"at":"2024-01-02T03:04:05Z"}]',
    b'[{"co\xc0\xafde":"a","count":1,"at":"2024-01-02T03:04:05Z"}]',
    # numbers past every bound
    b'[{"code":"a","count":1,"amount":' + b"9" * 400 + b',"at":"2024-01-02T03:04:05Z"}]',
    b'[{"code":"a","count":' + b"9" * 400 + b',"at":"2024-01-02T03:04:05Z"}]',
])
def test_edge_bodies_are_read_as_pydantic_reads_them(body: bytes) -> None:
    assert_same_reading(PROBE, body)
