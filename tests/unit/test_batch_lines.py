"""The "batch answered" line: every batch that is not clean gets one; clean ones up to
``log.clean_batch_lines_per_s`` a second, the rest counted in the next line (issue 21)."""

from __future__ import annotations

from typing import Any

import pytest
import structlog
from aiormq import spec
from aiormq.abc import DeliveredMessage
from pamqp.header import ContentHeader
from pydantic import ValidationError

from worker import metrics as m
from worker.amqp.answered import BatchReport, LineBudget, is_clean
from worker.amqp.delivery import Delivery
from worker.core.errors import MessageRejected
from worker.core.wire import ATTEMPTS_HEADER
from worker.processor import Answer
from worker.settings import LogSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def delivery(**headers: Any) -> Delivery:
    message = DeliveredMessage(
        delivery=spec.Basic.Deliver(consumer_tag="c", delivery_tag=1, routing_key="Benefit"),
        header=ContentHeader(properties=spec.Basic.Properties(
            message_id="m-1", headers={"x-upsert-path": "/benefits-batch", **headers})),
        body=b"[]", channel=None)  # type: ignore[arg-type]  # never used: nothing is acked
    return Delivery.of(message, b"key")


def answer(**fields: Any) -> Answer:
    values: dict[str, Any] = {"status": 207, "body": b"{}", "entity": "Benefit",
                              "database": "demo", "path": "/benefits-batch",
                              "status_counts": {201: 2, 200: 1}, "item_count": 3}
    return Answer(**{**values, **fields})


def test_the_budget_allows_its_rate_in_bursts_of_one_second() -> None:
    clock = Clock()
    budget = LineBudget(10, clock)
    assert sum(budget.take() for _ in range(50)) == 10  # a second's worth at once
    clock.now += 0.5
    assert sum(budget.take() for _ in range(50)) == 5
    clock.now += 100  # a long pause refills one second's worth, no more
    assert sum(budget.take() for _ in range(50)) == 10


def test_a_budget_below_one_line_a_second_still_logs_now_and_then() -> None:
    clock = Clock()
    budget = LineBudget(0.5, clock)
    assert budget.take() and not budget.take()
    clock.now += 2
    assert budget.take()


def test_a_budget_of_zero_allows_every_line() -> None:
    budget = LineBudget(0, Clock())
    assert all(budget.take() for _ in range(10_000))


@pytest.mark.parametrize(("fields", "headers"), [
    ({"status_counts": {201: 1, 404: 1}}, {}),        # an item not written
    ({"status_counts": {409: 1}}, {}),
    ({"replayed": True}, {}),                          # answered from the record
    ({"dry_run": True}, {}),
    ({"status": 400, "status_counts": {},               # refused, dead-lettered
      "error": MessageRejected("bad")}, {}),
    ({}, {ATTEMPTS_HEADER: 1}),                        # came back from a retry queue
])
def test_anything_unusual_is_not_clean(fields: dict[str, Any], headers: dict[str, Any]) -> None:
    assert is_clean(delivery(), answer())
    assert not is_clean(delivery(**headers), answer(**fields))


def test_clean_batches_above_the_rate_are_counted_in_the_next_line() -> None:
    report = BatchReport({"demo"}, LogSettings(clean_batch_lines_per_s=2))
    before = m.LOG_LINES_UNLOGGED._value.get()
    with structlog.testing.capture_logs() as lines:
        for _ in range(7):
            report.answered(delivery(), answer())
        report.answered(delivery(), answer(status_counts={404: 1}))  # always its line
    answered = [line for line in lines if line["event"] == "batch answered"]
    assert [line["unlogged"] for line in answered] == [0, 0, 5]
    assert answered[-1]["statuses"] == {"404": 1}
    assert m.LOG_LINES_UNLOGGED._value.get() - before == 5


def test_with_no_limit_every_batch_gets_its_line() -> None:
    report = BatchReport({"demo"}, LogSettings(clean_batch_lines_per_s=0))
    with structlog.testing.capture_logs() as lines:
        for _ in range(300):
            report.answered(delivery(), answer())
    assert len(lines) == 300 and all(line["unlogged"] == 0 for line in lines)


def test_every_batch_is_counted_logged_or_not() -> None:
    report = BatchReport({"demo"}, LogSettings(clean_batch_lines_per_s=1))
    counted = m.batches("Benefit", "demo", "answered")
    created = m.items("Benefit", "demo", "201")
    before = counted._value.get(), created._value.get()
    with structlog.testing.capture_logs():
        for _ in range(10):
            report.answered(delivery(), answer())
    assert counted._value.get() - before[0] == 10
    assert created._value.get() - before[1] == 20


@pytest.mark.parametrize("value", [-1, -0.5, float("nan"), "fast", "", None, [100]])
def test_a_malformed_line_rate_is_refused(value: object) -> None:
    with pytest.raises(ValidationError) as refused:
        LogSettings(clean_batch_lines_per_s=value)
    assert "clean_batch_lines_per_s" in str(refused.value)


def test_an_infinite_line_rate_logs_every_batch() -> None:
    """A tired operator's "inf": no limit at all, never a budget stuck at NaN."""
    clock = Clock()
    budget = LineBudget(LogSettings(clean_batch_lines_per_s=float("inf")).clean_batch_lines_per_s,
                        clock)
    assert all(budget.take() for _ in range(1_000))
    clock.now += 0.25
    assert all(budget.take() for _ in range(1_000))
