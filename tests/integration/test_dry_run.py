"""Dry runs end to end (x-upsert-dry-run, over AMQP, the client, the gateway), the recorded
replies read back (`messages show`), and `dlq replay --preview`: answered as for real,
nothing written, recorded or dead-lettered."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from tests.integration.test_gateway import HEADERS, gateway_settings, serving
from tests.support import samples
from tests.support.configs import make_settings, write_settings
from tests.support.operations_support import (
    dead_count,
    dead_letter_queue,
    put_dead_letters,
    run_cli,
    wait_dead_count,
)
from tests.support.producer import Producer
from tests.support.running import running
from tests.support.services import amqp_url
from vbapi_upsert_client import SyncUpsertClient, UpsertClient
from worker.amqp.deadletters import Selection
from worker.core.wire import DRY_RUN_HEADER
from worker.service import Worker
from worker.settings import Settings

PATH = samples.BENEFIT_PATH


def json_in(out: str) -> Any:
    """The command's JSON in its output, between the running worker's log lines."""
    start = next(i for i, line in enumerate(out.splitlines(keepends=True))
                 if line.startswith("["))
    return json.JSONDecoder().raw_decode("".join(out.splitlines(keepends=True)[start:]))[0]


async def counts(db: asyncpg.Connection) -> tuple[int, int]:
    """Rows in vbapi.benefit, and processed-message records."""
    rows = await db.fetchval("SELECT count(*) FROM vbapi.benefit")
    records = await db.fetchval("SELECT count(*) FROM vbapi.upsert_processed_message")
    return rows, records


async def stored(db: asyncpg.Connection) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await db.fetch(
        "SELECT benefit_code, medicare, upsert_source_ts, upsert_message_id "
        "FROM vbapi.benefit ORDER BY benefit_code")]


async def arrange(db: asyncpg.Connection, producer: Producer) -> None:
    """B_OLD stored by an ordinary batch (message id real-1); B_NEWER by a batch stamped
    a minute ahead, so that a batch of now is not applied over it."""
    await samples.create_parents(db)
    now = dt.datetime.now(dt.UTC)
    first = await producer.call(PATH, [samples.benefit("B_OLD", benefit_Category="MED")],
                                message_id="real-1", timestamp=now - dt.timedelta(seconds=60))
    assert [d["status"] for d in first.body["data"]] == [201]
    ahead = await producer.call(PATH, [samples.benefit("B_NEWER")],
                                timestamp=now + dt.timedelta(seconds=60))
    assert [d["status"] for d in ahead.body["data"]] == [201]


DRY_ITEMS = [samples.benefit("B_FRESH", benefit_Category="MED"),       # 201
             samples.benefit("B_OLD", medicare="Y"),                   # 200
             samples.benefit("B_ORPHAN", benefit_Category="NOPE"),     # 404
             samples.benefit("B_NEWER", medicare="Y"),                 # 409
             {"benefit_Code": "B_BAD"}]                                # 400
DRY_STATUSES = [201, 200, 404, 409, 400]


async def test_a_dry_run_answers_as_for_real_and_changes_nothing(
        worker: Worker, producer: Producer, db: asyncpg.Connection, vhost: str) -> None:
    await arrange(db, producer)
    before, rows_before = await counts(db), await stored(db)

    reply = await producer.call(PATH, DRY_ITEMS, dry_run=True)
    assert reply.status == 207 and reply.headers["status"] == 207
    assert [d["status"] for d in reply.body["data"]] == DRY_STATUSES
    assert reply.body["data"][2]["body"].startswith("parent benefit_category not found")
    assert "pend_Flag" in reply.body["data"][4]["body"]
    assert reply.body["debug"]["dryRun"] is True
    assert "processedBefore" not in reply.body["debug"]
    # Nothing written, nothing recorded: the same rows, values and records as before.
    assert await counts(db) == before
    assert await stored(db) == rows_before

    # A dry run of a recorded message_id is evaluated afresh (not the recorded reply), and
    # says so; the record stays as it was.
    record = await db.fetchrow("SELECT reply, activity_id FROM vbapi.upsert_processed_message "
                               "WHERE message_id = 'real-1'")
    again = await producer.call(PATH, DRY_ITEMS[:2], message_id="real-1", dry_run=True)
    assert [d["status"] for d in again.body["data"]] == [201, 200]
    assert again.body["debug"]["dryRun"] is True
    assert again.body["debug"]["processedBefore"] is True
    assert again.body["debug"]["activityID"] != record["activity_id"]
    assert await db.fetchrow("SELECT reply, activity_id FROM vbapi.upsert_processed_message "
                             "WHERE message_id = 'real-1'") == record
    assert await counts(db) == before

    # The same batch for real, by contrast, writes.
    real = await producer.call(PATH, DRY_ITEMS)
    assert [d["status"] for d in real.body["data"]] == DRY_STATUSES
    assert "dryRun" not in real.body["debug"]
    assert await counts(db) == (before[0] + 1, before[1] + 1)


async def test_a_dry_runs_whole_message_error_is_answered_not_dead_lettered(
        worker: Worker, producer: Producer, vhost: str) -> None:
    url = amqp_url(vhost)
    dry = await producer.call(PATH, [samples.benefit()], database="elsewhere", dry_run=True)
    assert dry.status == 404 and dry.body["error"]["status"] == 404
    assert dry.body["debug"]["dryRun"] is True
    malformed = await producer.call(PATH, body=b"[{]", dry_run=True)
    assert malformed.status == 400 and malformed.body["debug"]["dryRun"] is True
    # The same error for real is dead-lettered: only that one is in vbapi.dead.
    real = await producer.call(PATH, [samples.benefit()], database="elsewhere")
    assert real.status == 404 and "dryRun" not in real.body["debug"]
    await wait_dead_count(url, 1)
    await asyncio.sleep(0.5)
    assert await dead_count(url) == 1


async def test_the_client_dry_run(settings: Settings, worker: Worker, vhost: str,
                                  db: asyncpg.Connection) -> None:
    async with UpsertClient(amqp_url(vhost), database="demo") as client:
        reply = await client.upsert(PATH, [samples.benefit("C1")], dry_run=True)
        assert reply.dry_run and [i.status for i in reply.items] == [201]
        future = await client.send(PATH, [samples.benefit("C1")], dry_run=True)
        assert (await asyncio.wait_for(future, 30)).dry_run
    assert await counts(db) == (0, 0)

    def sync() -> tuple[bool, list[int]]:
        with SyncUpsertClient(amqp_url(vhost), database="demo") as client:
            answer = client.upsert(PATH, [samples.benefit("C2")], dry_run=True)
            return answer.dry_run, [i.status for i in answer.items]

    assert await asyncio.to_thread(sync) == (True, [201])
    assert await counts(db) == (0, 0)
    async with UpsertClient(amqp_url(vhost), database="demo") as client:
        real = await client.upsert(PATH, [samples.benefit("C1")])
    assert not real.dry_run and await counts(db) == (1, 1)


@pytest.mark.parametrize("asked", [{DRY_RUN_HEADER: "true"}, {"Prefer": "dry-run"},
                                   {"Prefer": "respond-async, dry-run"}])
async def test_a_dry_run_over_the_gateway(settings: Settings, vhost: str, worker: Worker,
                                          db: asyncpg.Connection, asked: dict[str, str]
                                          ) -> None:
    await samples.create_parents(db)
    async with serving(gateway_settings(settings, vhost)) as http:
        body = orjson.dumps([samples.benefit("G1", benefit_Category="MED"),
                             samples.benefit("G2", benefit_Category="NOPE")])
        response = await http.put(PATH, content=body,
                                  headers={**HEADERS, **asked, "Idempotency-Key": "g-1"})
        assert response.status_code == 207, response.text
        assert [d["status"] for d in response.json()["data"]] == [201, 404]
        assert response.json()["debug"]["dryRun"] is True
        assert ("Preference-Applied" in response.headers) == ("Prefer" in asked)
        assert await counts(db) == (0, 0)
        # The same Idempotency-Key for real afterwards is applied: the dry run kept no record.
        real = await http.put(PATH, content=body, headers={**HEADERS, "Idempotency-Key": "g-1"})
        assert [d["status"] for d in real.json()["data"]] == [201, 404]
        assert "dryRun" not in real.json()["debug"]
    assert await counts(db) == (1, 1)


async def test_messages_show_finds_records_by_id_and_producer(
        settings: Settings, worker: Worker, vhost: str, db: asyncpg.Connection,
        producer: Producer, producer_user: tuple[str, str], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    config = str(write_settings(tmp_path / "worker.toml", settings))
    name, password = producer_user
    anonymous = await producer.call(PATH, [samples.benefit("M1")], message_id="shared-id")
    async with UpsertClient(amqp_url(vhost, name, password), database="demo",
                            user_id=name) as client:
        named = await client.upsert(PATH, [samples.benefit("M2"), {"benefit_Code": "M3"}],
                                    message_id="shared-id", routing_key="Benefit")
    assert [i.status for i in named.items] == [201, 400]

    code, out, _ = await run_cli(["messages", "show", "shared-id", "--json",
                                  "--config", config], capsys)
    assert code == 0, out
    records = json_in(out)
    assert sorted(r["producer"] for r in records) == ["", name]
    assert all(r["database"] == "demo" and r["path"] == PATH and r["status"] == 207
               for r in records)
    by_producer = {r["producer"]: r for r in records}
    assert by_producer[""]["reply"] == anonymous.body
    assert by_producer[name]["activity_id"] == named.activity_id
    assert [d["status"] for d in by_producer[name]["reply"]["data"]] == [201, 400]

    code, out, _ = await run_cli(["messages", "show", "shared-id", "--producer", name,
                                  "--database", "demo", "--config", config], capsys)
    assert code == 0, out
    assert f"producer:      {name}" in out and "(none: no user_id)" not in out
    assert "M2" in out and "201" in out and "B_" not in out
    assert "pend_Flag: Field required" in out

    code, out, err = await run_cli(["messages", "show", "shared-id", "--producer", "other",
                                    "--json", "--config", config], capsys)
    assert code == 1 and json_in(out) == [] and "no record" in err
    code, _, err = await run_cli(["messages", "show", "shared-id", "--database", "nowhere",
                                  "--config", config], capsys)
    assert code == 2 and "not configured" in err


async def test_replay_preview_answers_each_dead_letter_and_keeps_them(
        vhost: str, dsn: str, db: asyncpg.Connection, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    url = amqp_url(vhost)
    # Dead letters for database "late", now configured: a replay would be answered 207.
    settings = make_settings(vhost, {"late": {"dsn": dsn}})
    config = str(write_settings(tmp_path / "worker.toml", settings))
    await put_dead_letters(url, 3)
    queue = dead_letter_queue(settings)
    order = [d.id for d in await queue.letters()]
    async with running(settings):
        code, out, err = await run_cli(["dlq", "replay", "--all", "--preview", "--timeout",
                                        "20", "--config", config], capsys)
        assert code == 0, err
        assert out.count("would be answered 207") == 3
        assert "B0" in out and "B2" in out and "Created" in out
        assert "previewed 3/3" in out

        previews = await queue.preview(Selection(ids=["act-00001", "missing"]), timeout_s=20)
        assert [p.letter.id for p in previews] == ["act-00001"]
        (preview,) = previews
        assert preview.status == 207 and not preview.timed_out
        assert preview.reply is not None and preview.reply["debug"]["dryRun"] is True
        assert [d["status"] for d in preview.reply["data"]] == [201]
        await asyncio.sleep(0.5)
    # Every dead letter still there, in order; nothing written, nothing recorded.
    assert [d.id for d in await queue.letters()] == order
    assert await counts(db) == (0, 0)


async def test_replay_preview_of_a_refused_batch_and_without_a_worker(
        vhost: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], dsn: str) -> None:
    url = amqp_url(vhost)
    settings = make_settings(vhost, {"demo": {"dsn": dsn}})  # "late" still not configured
    config = str(write_settings(tmp_path / "worker.toml", settings))
    await put_dead_letters(url, 1)
    code, _, err = await run_cli(["dlq", "replay", "--id", "act-00000", "--preview",
                                  "--timeout", "1", "--config", config], capsys)
    assert code == 1 and "no answer in time" in err
    async with running(settings):
        code, out, _ = await run_cli(["dlq", "replay", "--id", "act-00000", "--preview",
                                      "--json", "--config", config], capsys)
        assert code == 0
        (answer,) = json_in(out)
        assert answer["status"] == 404 and answer["reply"]["debug"]["dryRun"] is True
        assert "database 'late' is not configured" in answer["reply"]["error"]["detail"]
        await asyncio.sleep(0.5)
    # The preview was not dead-lettered again, the dead letter not taken away.
    assert await dead_count(url) == 1


async def test_a_dry_run_isolates_an_item_the_database_refuses(
        worker: Worker, producer: Producer, db: asyncpg.Connection) -> None:
    """The second pass (rows halved under savepoints) is rolled back too."""
    await db.execute("INSERT INTO vbapi.benefit_category VALUES ('MED');"
                     "ALTER TABLE vbapi.benefit ADD CONSTRAINT no_bad_hipaa "
                     "CHECK (hipaa_code <> 'BAD')")
    items = [samples.benefit(f"I{i}", benefit_Category="MED",
                             hipaA_Code="BAD" if i == 3 else "OK") for i in range(8)]
    reply = await producer.call(PATH, items, dry_run=True)
    statuses = [d["status"] for d in reply.body["data"]]
    assert statuses == [201, 201, 201, 400, 201, 201, 201, 201]
    assert "hipaA_Code" in reply.body["data"][3]["body"]
    assert reply.body["debug"]["dryRun"] is True
    assert await counts(db) == (0, 0)


async def test_a_dry_run_failing_transiently_is_answered_503_at_once(
        vhost: str, producer: Producer) -> None:
    """No retry queue, no dead letter: whoever asked for a dry run is waiting."""
    # A database that does not answer: a transient failure.
    settings = make_settings(vhost, {"demo": {"dsn": "postgresql://root@127.0.0.1:1/nowhere"}},
                             retry={"delays_s": [5.0, 5.0], "max_deliveries": 3})
    async with running(settings):
        reply = await producer.call(PATH, [samples.benefit()], dry_run=True)
    assert reply.status == 503 and reply.body["debug"]["dryRun"] is True
    assert "after 1 attempts" in reply.body["error"]["detail"]
    assert await dead_count(amqp_url(vhost)) == 0
