"""The dry run's pure parts: the header read as a yes/no, the plan and replies saying it,
a dry run's refusal not dead-lettered, the gateway's two ways of asking."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest
from starlette.requests import Request as HttpRequest

from schemas.registry import default_registry
from tests.support import samples
from worker.core import errors
from worker.core.batch import Outcome
from worker.core.intake import IntakeRules, prepare_batch
from worker.core.replies import batch_reply, problem_reply
from worker.core.request import Request
from worker.core.wire import DRY_RUN_HEADER, flag_header
from worker.http.gateway import dry_run_asked
from worker.processor import Answer
from worker.settings import Settings

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(("value", "expected"), [
    (True, True), ("true", True), ("TRUE ", True), (b"true", True), (1, True), ("1", True),
    ("yes", True), ("maybe", True),  # asked in some other spelling: never a write
    (False, False), ("false", False), ("False", False), (0, False), ("0", False),
    ("no", False), ("", False), (b"", False), (None, False),
])
def test_the_header_is_yes_unless_plainly_no(value: Any, expected: bool) -> None:
    assert flag_header({DRY_RUN_HEADER: value}, DRY_RUN_HEADER) is expected
    assert flag_header({}, DRY_RUN_HEADER) is False


def request(**headers: Any) -> Request:
    return Request(body=orjson.dumps([samples.benefit("B1"), {"benefit_Code": "B2"}]),
                   headers={"path": samples.BENEFIT_PATH, "vbasoftware-database": "demo",
                            **headers})


def test_the_plan_and_its_reply_say_dry_run() -> None:
    settings = Settings(databases={"demo": {"dsn": "postgresql://127.0.0.1/x"}})
    rules = IntakeRules.of(settings)
    plan = prepare_batch(request(**{DRY_RUN_HEADER: True}), rules, default_registry(), NOW,
                         "A1")
    assert plan.dry_run
    reply = orjson.loads(batch_reply(plan, Outcome(plan), processed_before=True))
    assert reply["debug"] == {"activityID": "A1", "dryRun": True, "processedBefore": True}
    assert reply["data"][1]["status"] == 400
    real = prepare_batch(request(), rules, default_registry(), NOW, "A2")
    assert not real.dry_run
    assert orjson.loads(batch_reply(real, Outcome(real)))["debug"] == {"activityID": "A2"}


def test_a_dry_runs_refusal_says_so_and_is_no_dead_letter() -> None:
    error = errors.NotFound("database 'x' is not configured")
    body = orjson.loads(problem_reply(error, "/benefits-batch", "A1", dry_run=True))
    assert body["debug"] == {"activityID": "A1", "dryRun": True}
    assert orjson.loads(problem_reply(error, None, "A1"))["debug"] == {"activityID": "A1"}
    answer = Answer(status=404, body=b"", entity=None, database=None, path=None, error=error)
    assert answer.dead_letter
    answer.dry_run = True
    assert not answer.dead_letter


def http_request(*headers: tuple[str, str]) -> HttpRequest:
    return HttpRequest({"type": "http", "method": "PUT", "path": "/benefits-batch",
                        "headers": [(k.lower().encode(), v.encode()) for k, v in headers]})


@pytest.mark.parametrize(("headers", "expected"), [
    ((), (False, False)),
    ((("Prefer", "dry-run"),), (True, True)),
    ((("Prefer", "respond-async, dry-run"),), (True, True)),
    ((("Prefer", "return=minimal"), ("Prefer", "Dry-Run")), (True, True)),
    ((("Prefer", "return=minimal"),), (False, False)),
    (((DRY_RUN_HEADER, "true"),), (False, True)),
    (((DRY_RUN_HEADER, "false"),), (False, False)),
])
def test_the_gateway_reads_both_ways_of_asking(headers: tuple[tuple[str, str], ...],
                                               expected: tuple[bool, bool]) -> None:
    assert dry_run_asked(http_request(*headers)) == expected


def test_replay_takes_dry_run_or_preview_not_both() -> None:
    from worker.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["dlq", "replay", "--all", "--dry-run"]).dry_run
    preview = parser.parse_args(["dlq", "replay", "--id", "a", "--preview", "--timeout", "5"])
    assert preview.preview and preview.timeout == 5.0 and not preview.dry_run
    with pytest.raises(SystemExit):
        parser.parse_args(["dlq", "replay", "--all", "--dry-run", "--preview"])
    shown = parser.parse_args(["messages", "show", "m-1", "--producer", "", "--json"])
    assert (shown.id, shown.producer, shown.database, shown.json) == ("m-1", "", None, True)
