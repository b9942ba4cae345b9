"""The ``dlq`` commands against the real broker: order kept with thousands, replay with the
original properties and confirmed removal, purge, and the operator's typical story."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import aio_pika
import asyncpg
import orjson
import pytest

from tests.support.configs import make_settings, write_settings
from tests.support.databases import isolated_database
from tests.support.operations_support import (
    STAMP,
    channel_on,
    dead_count,
    dead_letter_queue,
    put_dead_letters,
    run_cli,
    run_console_script,
    status_of,
    wait_dead_count,
)
from tests.support.producer import Replies
from tests.support.running import running
from tests.support.samples import benefit
from tests.support.services import SERVICES, amqp_url
from worker.amqp import deadletters, letters
from worker.amqp.identity import SIGNATURE_HEADER, USER_HEADER
from worker.amqp.topology import DEAD_QUEUE, REQUEST_QUEUE, declare_topology
from worker.core.wire import RECEIVED_AT_HEADER


async def test_list_keeps_thousands_in_order(vhost: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    url = amqp_url(vhost)
    settings = make_settings(vhost, {"demo": {"dsn": "postgresql://127.0.0.1/unused"}})
    config = write_settings(tmp_path / "worker.toml", settings)
    await put_dead_letters(url, 3000, lambda n: 404 if n % 3 else 503)

    code, out, _ = await run_cli(["dlq", "list", "--json", "--config", str(config)], capsys)
    assert code == 0
    rows = orjson.loads(out)
    assert [r["id"] for r in rows] == [f"act-{n:05d}" for n in range(3000)]
    assert rows[1] == {"id": "act-00001", "database": "late", "path": "/benefits-batch",
                       "entity": "Benefit", "items": 1, "status": 404, "title": "Not Found",
                       "attempts": 1, "dead_lettered_at": "2024-05-01T12:00:00+00:00"}
    # A second read sees the same queue, in the same order: nothing lost or moved.
    again = await dead_letter_queue(settings).letters()
    assert [d.id for d in again] == [r["id"] for r in rows]
    assert await dead_count(url) == 3000
    assert letters.group_by_status(again) == {"404": 2000, "503": 1000}


async def test_replay_subset_keeps_properties_and_order(vhost: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    url = amqp_url(vhost)
    settings = make_settings(vhost, {"demo": {"dsn": "postgresql://127.0.0.1/unused"}})
    config = str(write_settings(tmp_path / "worker.toml", settings))
    await put_dead_letters(url, 10, lambda n: 503 if n in (3, 7) else 404)
    async with channel_on(url) as channel:
        await declare_topology(channel, settings.retry.delays_s)

    code, out, _ = await run_cli(["dlq", "replay", "--status", "503", "--dry-run",
                                  "--config", config], capsys)
    assert code == 0 and "act-00003" in out and "act-00007" in out and "would replay 2" in out
    assert await dead_count(url) == 10

    code, out, _ = await run_cli(["dlq", "replay", "--config", config, "--id", "act-00007",
                                  "act-00003"], capsys)
    assert code == 0, out
    assert "replayed 2, failed 0" in out
    remaining = await dead_letter_queue(settings).letters()
    assert [d.id for d in remaining] == [f"act-{n:05d}" for n in (0, 1, 2, 4, 5, 6, 8, 9)]

    async with channel_on(url) as channel:
        requests = await channel.declare_queue(REQUEST_QUEUE, passive=True)
        got = [await requests.get(timeout=5) for _ in range(2)]
    # Replayed in queue order, as the producer sent them, without the dead-letter headers.
    assert [m.message_id for m in got] == ["msg-00003", "msg-00007"]
    first = got[0]
    assert first.correlation_id == "cor-00003" and first.reply_to == "reply-3"
    assert first.timestamp is not None and first.timestamp.replace(tzinfo=dt.UTC) == STAMP
    assert first.user_id is None and first.content_type == "application/json"
    assert first.body == orjson.dumps([benefit("B3")])
    # The quorum queue counts deliveries afresh (the dead letter carried 2).  The first
    # receipt time stays: the worker believes it where its signature holds (not here).
    assert first.headers == {"path": "/benefits-batch", "vbasoftware-database": "late",
                             "x-upsert-received-at": "2024-05-01T11:59:59+00:00",
                             "x-delivery-count": 0}
    assert first.routing_key == "Benefit"

    code, _, err = await run_cli(["dlq", "purge", "--id", "act-00000", "--config", config],
                                 capsys)
    assert code == 2 and "--yes" in err
    code, out, err = await run_cli(["dlq", "purge", "--yes", "--id", "act-00000", "act-00005",
                                    "nope", "--config", config], capsys)
    assert code == 1 and "purged 2" in out and "no dead letter nope" in err
    remaining = await dead_letter_queue(settings).letters()
    assert [d.id for d in remaining] == [f"act-{n:05d}" for n in (1, 2, 4, 6, 8, 9)]

    code, _, err = await run_cli(["dlq", "show", "act-00005", "--config", config], capsys)
    assert code == 1 and "no dead letter act-00005" in err  # purged above
    code, out, _ = await run_cli(["dlq", "show", "act-00008", "--config", config], capsys)
    shown = orjson.loads(out)
    assert shown["body"] == [benefit("B8")] and shown["properties"]["message_id"] == "msg-00008"
    assert shown["headers"]["x-upsert-error-detail"] == "database 'late' is not configured"

    code, out, _ = await run_cli(["dlq", "purge", "--all", "--yes", "--config", config], capsys)
    assert code == 0 and "purged 6" in out
    assert await dead_count(url) == 0


async def test_replay_removes_nothing_the_broker_refused(
        vhost: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The request queue refuses every publish (a real policy): each dead letter stays, in
    order; once it accepts again, the same replay goes through."""
    url = amqp_url(vhost)
    settings = make_settings(vhost, {"demo": {"dsn": "postgresql://127.0.0.1/unused"}})
    config = str(write_settings(tmp_path / "worker.toml", settings))
    await put_dead_letters(url, 3)
    async with channel_on(url) as channel:
        await declare_topology(channel, settings.retry.delays_s)
        # A quorum queue refuses publishes once it is over its limit: fill it past 0.
        await channel.default_exchange.publish(aio_pika.Message(b"[]"), REQUEST_QUEUE)
    SERVICES.broker.set_policy(vhost, "full", f"^{REQUEST_QUEUE}$",
                               {"max-length": 0, "overflow": "reject-publish"},
                               apply_to="queues")
    code, out, err = await run_cli(["dlq", "replay", "--all", "--config", config], capsys)
    assert code == 1 and "replayed 0, failed 3" in out and "act-00001: not replayed" in err
    assert [d.id for d in await dead_letter_queue(settings).letters()] == [
        "act-00000", "act-00001", "act-00002"]

    SERVICES.broker.clear_policy(vhost, "full")
    code, out, err = await run_cli(["dlq", "replay", "--all", "--config", config], capsys)
    assert code == 0 and "replayed 3, failed 0" in out, err
    assert await dead_count(url) == 0


async def test_story_database_configured_late(vhost: str, dsn: str, tmp_path: Path) -> None:
    """Dead-lettered because 'late' was not configured yet; fixed; replayed; lands."""
    url = amqp_url(vhost)
    async with isolated_database() as late_dsn, Replies(url) as replies:
        before = make_settings(vhost, {"demo": {"dsn": dsn}})
        async with running(before):
            sent = await replies.send("/benefits-batch", [benefit("L1"), benefit("L2")],
                                      database="late")
            [refused] = await replies.wait_for(sent)
            assert status_of(refused) == 404
            await wait_dead_count(url, 1)

        after = make_settings(vhost, {"demo": {"dsn": dsn}, "late": {"dsn": late_dsn}})
        config = str(write_settings(tmp_path / "fixed.toml", after))
        async with running(after):
            listed = await run_console_script(["dlq", "list", "--config", config])
            assert listed.returncode == 0, listed.stderr
            assert "late" in listed.stdout and "404" in listed.stdout
            done = await run_console_script(["dlq", "replay", "--status", "404",
                                             "--config", config])
            assert done.returncode == 0, done.stderr
            assert "replayed 1, failed 0" in done.stdout
            answers = await replies.wait_for(sent, count=2)
            assert status_of(answers[1]) == 207
            assert [d["status"] for d in orjson.loads(answers[1].body)["data"]] == [201, 201]
            assert await dead_count(url) == 0
        codes = await fetch_rows(late_dsn, "SELECT benefit_code, upsert_message_id"
                                           " FROM vbapi.benefit ORDER BY 1")
        assert [(r[0], r[1]) for r in codes] == [("L1", sent), ("L2", sent)]


async def fetch_rows(dsn: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


async def send_untimed(replies: Replies, code: str, text: str,
                       headers: dict[str, str] | None = None) -> str:
    """Publish a batch for database 'late' with no timestamp (the client library always
    sets one): ordered by the time the worker first receives it."""
    message_id = f"untimed-{code}-{text}"
    await replies.client.exchange.publish(aio_pika.Message(
        orjson.dumps([benefit(code, benefit_Description=text)]),
        headers={"path": "/benefits-batch", "vbasoftware-database": "late", **(headers or {})},
        content_type="application/json", message_id=message_id, correlation_id=message_id,
        reply_to=replies.queue.name), routing_key="Benefit")
    return message_id


async def test_a_replay_never_overwrites_newer_data_even_without_timestamps(
        vhost: str, dsn: str) -> None:
    """Issue 18, item 3: a batch sent without a timestamp is ordered by the time the worker
    first received it, and that time travels, signed, with its dead letter and replay.
    Here it was dead-lettered because 'late' was not configured yet; a newer batch for the
    same key is applied; the replay of the old one is then answered 409 and leaves the
    newer row.  A producer's own receipt-time header is not believed."""
    url = amqp_url(vhost)
    async with isolated_database() as late_dsn, Replies(url) as replies:
        before = make_settings(vhost, {"demo": {"dsn": dsn}})
        async with running(before):
            old = await send_untimed(replies, "K1", "old")
            [refused] = await replies.wait_for(old)
            assert status_of(refused) == 404
            await wait_dead_count(url, 1)
        [letter] = await dead_letter_queue(before).letters()
        assert RECEIVED_AT_HEADER in letter.headers and letter.message.timestamp is None

        after = make_settings(vhost, {"demo": {"dsn": dsn}, "late": {"dsn": late_dsn}})
        async with running(after):
            newer = await send_untimed(replies, "K1", "newer")
            [applied] = await replies.wait_for(newer)
            assert [d["status"] for d in orjson.loads(applied.body)["data"]] == [201]

            outcome = await dead_letter_queue(after).replay(deadletters.Selection(all_=True))
            assert len(outcome.done) == 1 and not outcome.failed
            replayed = (await replies.wait_for(old, count=2))[1]
            assert [d["status"] for d in orjson.loads(replayed.body)["data"]] == [409]

            # Claiming an early receipt time, unsigned, to win over the newer row: the
            # header is ignored, and the batch is ordered by when it really arrived.
            claimed = await send_untimed(replies, "K1", "claimed", headers={
                RECEIVED_AT_HEADER: "2000-01-01T00:00:00+00:00"})
            [answer] = await replies.wait_for(claimed)
            assert [d["status"] for d in orjson.loads(answer.body)["data"]] == [200]
        [row] = await fetch_rows(late_dsn, "SELECT benefit_description, upsert_message_id, "
                                           "upsert_source_ts FROM vbapi.benefit")
        assert (row[0], row[1]) == ("claimed", claimed)
        assert row[2] > dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)


async def test_replay_keeps_producer_identity_and_refuses_forgery(
        vhost: str, dsn: str, producer_user: tuple[str, str]) -> None:
    user, password = producer_user
    url = amqp_url(vhost)
    async with isolated_database() as late_dsn, Replies(amqp_url(vhost, user, password)) as acme:
        before = make_settings(vhost, {"demo": {"dsn": dsn}})
        async with running(before):
            sent = await acme.send("/benefits-batch", [benefit("A1")], database="late",
                                   user_id=user)
            [refused] = await acme.wait_for(sent)
            assert status_of(refused) == 404
            await wait_dead_count(url, 1)
        [original] = await dead_letter_queue(before).letters()
        assert original.headers[USER_HEADER] == user and SIGNATURE_HEADER in original.headers

        # Someone with write access to vbapi.dead claims the batch for another producer,
        # and a producer sets the identity header itself, unsigned.
        forged_ids = {"renamed": "forged-renamed", "unsigned": "forged-unsigned"}
        async with channel_on(url) as channel:
            renamed = {**original.message.headers, USER_HEADER: "someone-else",
                       "x-upsert-activity-id": "forged-1"}
            unsigned = {k: v for k, v in original.message.headers.items()
                        if k != SIGNATURE_HEADER}
            unsigned["x-upsert-activity-id"] = "forged-2"
            for headers, cid in ((renamed, forged_ids["renamed"]),
                                 (unsigned, forged_ids["unsigned"])):
                await channel.default_exchange.publish(aio_pika.Message(
                    body=original.body, headers=headers, content_type="application/json",
                    message_id=cid, correlation_id=cid, reply_to=acme.queue.name,
                    timestamp=original.message.timestamp), routing_key=DEAD_QUEUE)

        after = make_settings(vhost, {"demo": {"dsn": dsn},
                                      "late": {"dsn": late_dsn, "producers": [user]}})
        async with running(after):
            outcome = await dead_letter_queue(after).replay(deadletters.Selection(all_=True))
            assert len(outcome.done) == 3 and not outcome.failed
            answers = await acme.wait_for(sent, count=2)
            assert status_of(answers[1]) == 207
            assert [d["status"] for d in orjson.loads(answers[1].body)["data"]] == [201]
            for cid in forged_ids.values():
                [forged] = await acme.wait_for(cid)
                assert status_of(forged) in (401, 403)
            await wait_dead_count(url, 2)
        conn = await asyncpg.connect(late_dsn)
        try:
            row = await conn.fetchrow("SELECT entry_user, update_user FROM vbapi.benefit")
        finally:
            await conn.close()
        assert tuple(row) == (user, user)
        left = await dead_letter_queue(after).letters()
        assert sorted(d.properties["message_id"] for d in left) == sorted(forged_ids.values())
        assert {d.error_status for d in left} <= {401, 403}
