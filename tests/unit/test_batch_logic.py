"""The pure batch logic, without broker or database: decoding, routing, access, validation."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from typing import Any

import orjson
import pytest

from schemas.registry import default_registry
from tests.support import samples
from worker.core import errors
from worker.core.batch import Plan
from worker.core.intake import IntakeRules, prepare_batch
from worker.core.request import Request
from worker.settings import Settings

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
REGISTRY = default_registry()


def settings(**databases: Any) -> Settings:
    return Settings(databases=databases or {"demo": {"dsn": "postgresql://127.0.0.1/x"}},
                    amqp={"signing_key": "test-signing-key"},  # producers lists need one
                    limits={"max_body_bytes": 10_000, "max_decompressed_bytes": 20_000,
                            "max_items": 5})


def prepare(path: str | None, items: Any = None, *, body: bytes | None = None,
            database: str | None = "demo", config: Settings | None = None,
            **props: Any) -> Plan:
    headers: dict[str, Any] = {}
    if path is not None:
        headers["path"] = path
    if database is not None:
        headers["vbasoftware-database"] = database
    # json, not orjson: the tests send integers beyond 64 bits
    request = Request(body=json.dumps(items).encode() if body is None else body, headers=headers,
                      **props)
    return prepare_batch(request, IntakeRules.of(config or settings()), REGISTRY, NOW)


def answers(batch: Plan) -> list[tuple[int, str] | None]:
    return [(o.status, o.body) if o else None for o in batch.known]


def only_problem(path: str, item: dict[str, Any]) -> str:
    (outcome,) = prepare(path, [item]).known
    assert outcome is not None and outcome.status == 400
    return outcome.body


# -- whole-message errors ---------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "error", "detail"), [
    ({"path": None}, errors.MalformedMessage, "missing header 'path'"),
    ({"database": None}, errors.MalformedMessage, "missing header 'vbasoftware-database'"),
    ({"body": b"[{"}, errors.MalformedMessage, "body is not valid JSON"),
    ({"body": b'{"benefit_Code": "B1"}'}, errors.MalformedMessage, "must be a JSON array"),
    ({"body": b"\xff\xfe"}, errors.MalformedMessage, "not valid JSON"),
    ({"database": "other"}, errors.NotFound, "database 'other' is not configured"),
    ({"path": "/nothing-batch"}, errors.NotFound, "no endpoint matches path '/nothing-batch'"),
    ({"content_type": "text/plain"}, errors.UnsupportedMediaType, "text/plain"),
    ({"content_encoding": "br"}, errors.UnsupportedMediaType, "content encoding 'br'"),
    ({"body": b"[" + b" " * 10_000 + b"]"}, errors.TooLarge, "over the limit of 10000"),
    ({"body": orjson.dumps([samples.benefit(f"B{i}") for i in range(6)])}, errors.TooLarge,
     "6 items is over the limit of 5"),
])
def test_whole_message_errors(kwargs: dict[str, Any], error: type[errors.MessageRejected],
                              detail: str) -> None:
    kwargs.setdefault("path", samples.BENEFIT_PATH)
    with pytest.raises(error) as raised:
        prepare(items=[samples.benefit()], **kwargs)
    assert detail in raised.value.detail


def test_json_content_type_with_parameters_is_accepted() -> None:
    batch = prepare(samples.BENEFIT_PATH, [samples.benefit()],
                    content_type="Application/JSON; charset=utf-8")
    assert len(batch.rows) == 1


def test_gzip_body_is_inflated() -> None:
    body = gzip.compress(orjson.dumps([samples.benefit("B1"), samples.benefit("B2")]))
    batch = prepare(samples.BENEFIT_PATH, body=body, content_encoding="gzip")
    at = batch.entity.positions["benefit_Code"]
    assert [row[at] for _, row in batch.rows] == ["B1", "B2"]


def test_gzip_bomb_is_refused_without_inflating_it() -> None:
    bomb = gzip.compress(b"[" + b" " * 5_000_000 + b"]")
    assert len(bomb) < 10_000
    with pytest.raises(errors.TooLarge, match="decompressed body is over the limit of 20000"):
        prepare(samples.BENEFIT_PATH, body=bomb, content_encoding="gzip")


def test_broken_gzip_is_malformed() -> None:
    with pytest.raises(errors.MalformedMessage, match="not valid gzip"):
        prepare(samples.BENEFIT_PATH, body=b"not gzip", content_encoding="gzip")
    truncated = gzip.compress(orjson.dumps([samples.benefit()]))[:-8]
    with pytest.raises(errors.MalformedMessage, match="not valid gzip"):
        prepare(samples.BENEFIT_PATH, body=truncated[:20], content_encoding="gzip")


@pytest.mark.parametrize("after", [
    gzip.compress(orjson.dumps([{"benefit_Code": "SMUGGLED"}])),  # a second member
    b"trailing garbage",
])
def test_gzip_with_bytes_after_the_stream_is_malformed(after: bytes) -> None:
    # Reading only the first member would apply part of the body and drop the rest.
    body = gzip.compress(orjson.dumps([samples.benefit("B1")])) + after
    with pytest.raises(errors.MalformedMessage, match="after the compressed stream"):
        prepare(samples.BENEFIT_PATH, body=body, content_encoding="gzip")


def test_producer_list_requires_a_known_user_id() -> None:
    config = settings(demo={"dsn": "postgresql://127.0.0.1/x", "producers": ["acme-loader"]})
    with pytest.raises(errors.Unauthenticated, match="requires the producer's user_id"):
        prepare(samples.BENEFIT_PATH, [samples.benefit()], config=config)
    with pytest.raises(errors.Forbidden, match="producer 'mallory' may not write"):
        prepare(samples.BENEFIT_PATH, [samples.benefit()], config=config, user_id="mallory")
    batch = prepare(samples.BENEFIT_PATH, [samples.benefit()], config=config,
                    user_id="acme-loader")
    assert batch.user_id == "acme-loader"


def test_percent_encoded_path_segments_are_decoded() -> None:
    path = "/groups/G%201/divisions/D%2F1/plan-years-batch"
    batch = prepare(path, [samples.plan_year(group_ID="G 1", division_ID="D/1")])
    assert answers(batch) == [None]


# -- item validation ----------------------------------------------------------------------

def test_valid_items_become_rows_in_order() -> None:
    batch = prepare(samples.BENEFIT_PATH, [samples.benefit("B1"), samples.benefit("B2")])
    assert [index for index, _ in batch.rows] == [0, 1]
    assert batch.ids == [[{"key": "benefit_Code", "value": "B1"}],
                         [{"key": "benefit_Code", "value": "B2"}]]


@pytest.mark.parametrize(("item", "problem"), [
    (samples.benefit(pend_Flag=None) | {}, "pend_Flag: Input should be a valid string"),
    ({k: v for k, v in samples.benefit().items() if k != "pend_Flag"},
     "pend_Flag: Field required"),
    (samples.benefit(allow_Flat_Tax="true"), "allow_Flat_Tax: Input should be a valid boolean"),
    (samples.benefit(allow_Flat_Tax=1), "allow_Flat_Tax: Input should be a valid boolean"),
    (samples.benefit(benefit_Code="B" * 11),
     "benefit_Code: String should have at most 10 characters"),
    (samples.benefit(benefit_Code=""), "benefit_Code: String should have at least 1 character"),
    (samples.benefit(medicare="NO"), "medicare: String should have at most 1 character"),
    (samples.benefit(benefit_Description=5), "benefit_Description: Input should be a valid string"),
    (samples.benefit(entry_User="u" * 21), "entry_User: String should have at most 20 characters"),
    (samples.benefit(entry_Date="yesterday"), "entry_Date: Input should be a valid datetime"),
    (samples.benefit(entry_Date=None), "entry_Date: Input should be a valid datetime"),
    (samples.benefit(entry_Date=1700000000), "entry_Date: Input should be a valid datetime"),
    (samples.benefit(colour="red"), "colour: unknown field"),
    (samples.benefit(benefit_Description="a\u0000b"),
     "benefit_Description: must not contain a NUL character"),
])
def test_invalid_benefit_fields(item: dict[str, Any], problem: str) -> None:
    assert problem in only_problem(samples.BENEFIT_PATH, item)


@pytest.mark.parametrize(("value", "problem"), [
    (1.5, "Input should be a valid integer"),
    (1.0, "Input should be a valid integer"),
    ("7", "Input should be a valid integer"),
    (True, "Input should be a valid integer"),
    (2**31, "less than or equal to 2147483647"),
    (-(2**31) - 1, "greater than or equal to -2147483648"),
    (10**30, "less than or equal to 2147483647"),
])
def test_integer_keys_are_strict_32_bit(value: Any, problem: str) -> None:
    body = only_problem(samples.ARMOR_PATH, samples.armor(key=value))
    assert body.startswith("armorCodeExCode_Key: ") and problem in body


def test_integer_bounds_are_accepted() -> None:
    batch = prepare(samples.ARMOR_PATH, [samples.armor(2**31 - 1), samples.armor(-(2**31))])
    assert answers(batch) == [None, None]


@pytest.mark.parametrize(("value", "problem"), [
    ("12.5", "Input should be a valid number"),
    (True, "Input should be a valid number"),
])
def test_decimal_amounts_are_json_numbers(value: Any, problem: str) -> None:
    assert problem in only_problem(samples.EXPORTS_PATH, samples.export(export_Amount=value))


def test_non_finite_numbers_are_refused() -> None:
    body = orjson.dumps([samples.export()]).replace(b"12.5", b"1e400")
    (outcome,) = prepare(samples.EXPORTS_PATH, body=body).known
    assert outcome is not None and outcome.status == 400
    assert outcome.body == "export_Amount: Input should be a finite number"


def test_every_offending_field_is_named_once() -> None:
    body = only_problem(samples.BENEFIT_PATH, {"benefit_Code": "B1", "medicare": 1, "x": 2})
    assert body.split("; ") == [
        "x: unknown field",
        "allow_Flat_Tax: Field required",
        "medicare: Input should be a valid string",
        "pend_Flag: Field required",
    ]


def test_names_match_case_insensitively() -> None:
    item = {"BENEFIT_CODE": "B1", "allow_flat_tax": True, "Medicare": "N", "pend_flag": "N"}
    batch = prepare(samples.BENEFIT_PATH, [item, samples.benefit("B2")])
    assert answers(batch) == [None, None]
    assert batch.rows[0][1][batch.entity.positions["benefit_Code"]] == "B1"
    assert batch.ids[0] == [{"key": "benefit_Code", "value": "B1"}]


def test_two_spellings_of_one_field_are_refused() -> None:
    body = only_problem(samples.BENEFIT_PATH, samples.benefit() | {"BENEFIT_CODE": "B2"})
    assert "BENEFIT_CODE: duplicate of field benefit_Code" in body


def test_non_object_items_are_answered_alone() -> None:
    body = orjson.dumps([samples.benefit("B1"), 5, None, [1], samples.benefit("B2")])
    batch = prepare(samples.BENEFIT_PATH, body=body)
    assert answers(batch) == [None, (400, "item must be a JSON object, not a number"),
                              (400, "item must be a JSON object, not null"),
                              (400, "item must be a JSON object, not an array"), None]
    assert batch.ids[1] == [{"key": "benefit_Code", "value": None}]


def test_invalid_items_keep_their_sent_key_in_the_reply() -> None:
    batch = prepare(samples.ARMOR_PATH, [samples.armor(key="seven")])
    assert batch.ids == [[{"key": "armorCodeExCode_Key", "value": "seven"}]]


def test_composite_key_is_listed_in_key_order() -> None:
    batch = prepare(samples.PLAN_YEAR_PATH, [samples.plan_year("CY2024")])
    assert batch.ids == [[{"key": "group_ID", "value": "G1"},
                          {"key": "division_ID", "value": "D1"},
                          {"key": "plan_Year", "value": "CY2024"}]]


def test_path_mismatch_names_field_and_parameter() -> None:
    body = only_problem(samples.PLAN_YEAR_PATH, samples.plan_year(group_ID="G2"))
    assert body == "group_ID: 'G2' does not match path groupID 'G1'"


def test_datetime_path_parameter_compares_as_a_datetime() -> None:
    same = samples.export(effective_Date="2024-01-01T00:00:00Z")
    other = samples.export(2, effective_Date="2024-01-02T00:00:00")
    batch = prepare(samples.EXPORTS_PATH, [same, other])
    assert answers(batch) == [None, (400, "effective_Date: '2024-01-02T00:00:00+00:00' does not "
                                          "match path effectiveDate '2024-01-01T00:00:00+00:00'")]


def test_every_bound_path_parameter_is_checked() -> None:
    item = samples.export(subscriber_ID="S2", plan_ID="P2", calendar_Year="2023")
    body = only_problem(samples.EXPORTS_PATH, item)
    assert body.split("; ") == [
        "subscriber_ID: 'S2' does not match path subscriberID 'S1'",
        "plan_ID: 'P2' does not match path planID 'P1'",
        "calendar_Year: '2023' does not match path calendarYear '2024'",
    ]


def test_unparseable_path_parameter_is_malformed() -> None:
    with pytest.raises(errors.MalformedMessage, match="path parameter effectiveDate"):
        prepare("/subscribers/S1/groups/G1/plans/P1/flexes/2024/soon/exports-batch",
                [samples.export()])


def test_one_bad_item_does_not_change_the_others() -> None:
    items = [samples.benefit(f"B{i}") for i in range(5)]
    items[2]["pend_Flag"] = "too long"
    batch = prepare(samples.BENEFIT_PATH, items)
    assert [i for i, _ in batch.rows] == [0, 1, 3, 4]
    assert answers(batch)[2] == (400, "pend_Flag: String should have at most 1 character")


def test_batch_timestamp_orders_writes_else_receive_time() -> None:
    stamped = dt.datetime(2025, 5, 1, 12, 0, 0)
    batch = prepare(samples.BENEFIT_PATH, [samples.benefit()], timestamp=stamped)
    assert batch.source_ts == stamped.replace(tzinfo=dt.UTC)
    assert prepare(samples.BENEFIT_PATH, [samples.benefit()]).source_ts == NOW


def test_a_timestamp_from_the_future_is_malformed() -> None:
    """Issue 18, item 3: a timestamp far ahead would pin its rows against every later
    batch; up to max_clock_skew_s (300 s) ahead of the first receipt is fine."""
    near = NOW + dt.timedelta(seconds=300)
    assert prepare(samples.BENEFIT_PATH, [samples.benefit()], timestamp=near).source_ts == near
    with pytest.raises(errors.MalformedMessage, match=r"timestamp: .* is 301 s ahead"):
        prepare(samples.BENEFIT_PATH, [samples.benefit()],
                timestamp=NOW + dt.timedelta(seconds=301))


def test_empty_batch_is_valid_and_empty() -> None:
    batch = prepare(samples.BENEFIT_PATH, [])
    assert batch.known == [] and batch.rows == []


def test_a_message_id_longer_than_the_record_keeps_is_malformed() -> None:
    prepare(samples.BENEFIT_PATH, [samples.benefit()], message_id="é" * 127)  # 254 bytes
    with pytest.raises(errors.MalformedMessage, match="message_id: 256 bytes is over the limit"):
        prepare(samples.BENEFIT_PATH, [samples.benefit()], message_id="é" * 128)
