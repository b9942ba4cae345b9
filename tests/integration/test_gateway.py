"""The HTTP gateway against the real broker, database and worker: the API's own paths."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import hashlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from openapi_spec_validator import validate
from pydantic import SecretStr

from schemas.registry import Registry, default_registry
from tests.support import samples
from tests.support.configs import write_settings
from tests.support.reliability_support import queue_depth
from tests.support.running import running
from tests.support.services import (
    amqp_url,
    close_connections,
    free_port,
    rabbitmqctl,
    serving_app,
)
from tests.support.waiting import wait_until
from worker.amqp.topology import REQUEST_QUEUE
from worker.http.gateway import Gateway, GatewayRefused, build_app, check_exposure
from worker.http.gateway_openapi import openapi_document
from worker.service import Worker
from worker.settings import GatewaySettings, Settings

HEADERS = {"vbasoftware-database": "demo", "content-type": "application/json"}
SEEDS = [(samples.BENEFIT_PATH, [samples.benefit("B1", benefit_Category="MED")]),
         (samples.ARMOR_PATH, [samples.armor(1)]),
         (samples.FLEX_SCHEDULE_PATH, [samples.flex_schedule(1)]),
         (samples.PLAN_YEAR_PATH, [samples.plan_year("CY2024")]),
         (samples.EXPORTS_PATH, [samples.export(1)])]


def digest(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway on a port of its own in this event loop, and an HTTP client for it."""
    gateway = Gateway(settings)
    await gateway.start()
    try:
        async with serving_app(build_app(gateway)) as url, \
                httpx.AsyncClient(base_url=url, timeout=60) as http:
            yield http
    finally:
        await gateway.stop()


def assert_problem(response: httpx.Response, status: int, instance: str) -> dict[str, Any]:
    """The worker's problem shape: type, title, status, detail, instance and
    debug.activityID (a ULID); returns the body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert body["data"] is None
    error = body["error"]
    assert set(error) == {"type", "title", "status", "detail", "instance"}
    assert error["type"].startswith("https://tools.ietf.org/html/rfc72")
    assert error["title"] and error["detail"]
    assert error["status"] == status and error["instance"] == instance
    assert len(body["debug"]["activityID"]) == 26
    return body


def gateway_settings(settings: Settings, vhost: str, user: tuple[str, str] | None = None,
                     **gateway: Any) -> Settings:
    """The worker's settings (databases, limits) for the gateway, as its own broker user
    if given."""
    amqp = settings.amqp
    if user is not None:
        amqp = amqp.model_copy(update={"url": SecretStr(amqp_url(vhost, *user))})
    return settings.model_copy(update={
        "amqp": amqp, "gateway": GatewaySettings(**{"timeout_s": 20.0, **gateway})})


async def test_each_seed_entity_answers_207(settings: Settings, vhost: str, worker: Worker,
                                            db: asyncpg.Connection) -> None:
    await samples.create_parents(db)
    async with serving(gateway_settings(settings, vhost)) as http:
        for path, items in SEEDS:
            response = await http.put(path, content=orjson.dumps(items), headers=HEADERS)
            assert response.status_code == 207, response.text
            assert response.headers["content-type"] == "application/json"
            assert [d["status"] for d in response.json()["data"]] == [201], path


async def test_whole_message_errors_keep_their_own_status(
        settings: Settings, vhost: str, dsn: str) -> None:
    settings = settings.model_copy(update={"databases": {
        **settings.databases,
        "down": settings.databases["demo"].model_copy(update={"dsn": SecretStr(
            "postgresql://root@127.0.0.1:1/nowhere")}),
        "guarded": settings.databases["demo"].model_copy(update={"producers": ["alice"]}),
    }})
    settings = settings.model_copy(update={"limits": settings.limits.model_copy(
        update={"max_body_bytes": 4096, "max_items": 5})})
    async with running(settings), serving(gateway_settings(settings, vhost)) as http:
        async def put(path: str, body: bytes, **headers: str) -> httpx.Response:
            return await http.put(path, content=body, headers={**HEADERS, **headers})

        answers = {
            400: await put(samples.ARMOR_PATH, b"[{"),
            403: await put(samples.ARMOR_PATH, b"[]", **{"vbasoftware-database": "guarded"}),
            404: await put("/no-such-batch", b"[]"),
            413: await put(samples.ARMOR_PATH, b"[" + b",".join([b"{}"] * 6) + b"]"),
            415: await put(samples.ARMOR_PATH, b"[]", **{"content-type": "text/csv"}),
            503: await put(samples.ARMOR_PATH, orjson.dumps([samples.armor(1)]),
                           **{"vbasoftware-database": "down"}),
        }
        too_big = await put(samples.ARMOR_PATH, b" " * 5000 + b"[]")
    for status, response in answers.items():
        assert response.status_code == status, (status, response.text)
        body = response.json()
        assert body["data"] is None and body["error"]["status"] == status
    assert answers[404].json()["error"]["instance"] == "/no-such-batch"
    # Refused by the gateway before it is read, in the worker's shape.
    assert_problem(too_big, 413, samples.ARMOR_PATH)


async def test_api_keys_and_the_impersonation_rule(
        settings: Settings, vhost: str, producer_user: tuple[str, str],
        db: asyncpg.Connection) -> None:
    keys = {"alice": digest("alice-key"), "bob": digest("bob-key")}
    gateway = gateway_settings(settings, vhost, producer_user, api_keys=keys)
    # Without the impersonator tag the gateway cannot publish for its producers: refused.
    with pytest.raises(GatewayRefused, match=f"'{producer_user[0]}' may not publish for the "
                                             f"producers.*impersonator"):
        async with serving(gateway):
            pass
    rabbitmqctl("set_user_tags", producer_user[0], "impersonator")
    guarded = settings.model_copy(update={"databases": {
        "demo": settings.databases["demo"].model_copy(update={"producers": ["alice"]})}})
    async with running(guarded), serving(gateway) as http:
        body = orjson.dumps([samples.armor(1)])
        alice = await http.put(samples.ARMOR_PATH, content=body,
                               headers={**HEADERS, "x-api-key": "alice-key"})
        bearer = await http.put(samples.ARMOR_PATH, content=body,
                                headers={**HEADERS, "authorization": "Bearer alice-key"})
        bob = await http.put(samples.ARMOR_PATH, content=body,
                             headers={**HEADERS, "x-api-key": "bob-key"})
        unknown = await http.put(samples.ARMOR_PATH, content=body,
                                 headers={**HEADERS, "x-api-key": "mallory"})
        missing = await http.put(samples.ARMOR_PATH, content=body, headers=HEADERS)
    assert [alice.status_code, bearer.status_code] == [207, 207]
    assert bob.status_code == 403  # the database's producers rule, as over AMQP
    assert_problem(unknown, 401, samples.ARMOR_PATH)
    missing_body = assert_problem(missing, 401, samples.ARMOR_PATH)
    assert missing_body["error"]["type"] == "https://tools.ietf.org/html/rfc7235#section-3.1"
    assert await db.fetchval("SELECT update_user FROM vbapi.armor_code_ex_code") == "alice"


async def test_a_retried_idempotency_key_gets_the_recorded_reply(
        settings: Settings, vhost: str, worker: Worker, db: asyncpg.Connection) -> None:
    headers = {**HEADERS, "idempotency-key": "retry-1"}
    async with serving(gateway_settings(settings, vhost)) as http:
        first = await http.put(samples.ARMOR_PATH, content=orjson.dumps([samples.armor(1)]),
                               headers=headers)
        again = await http.put(samples.ARMOR_PATH, content=orjson.dumps([samples.armor(1)]),
                               headers=headers)
    assert first.status_code == again.status_code == 207
    assert first.json() == again.json()  # 201 both times: answered from the record
    assert first.json()["data"][0]["status"] == 201
    assert await db.fetchval("SELECT count(*) FROM vbapi.armor_code_ex_code") == 1


async def test_no_reply_in_time_is_504_with_the_message_id(settings: Settings,
                                                           vhost: str) -> None:
    # No worker runs: the batch waits in the queue.
    async with serving(gateway_settings(settings, vhost, timeout_s=0.5)) as http:
        response = await http.put(samples.ARMOR_PATH, content=b"[]",
                                  headers={**HEADERS, "idempotency-key": "slow-1"})
    body = assert_problem(response, 504, samples.ARMOR_PATH)
    assert body["debug"]["messageID"] == "slow-1"
    assert "batch slow-1 was queued and will be applied" in body["error"]["detail"]


async def test_a_chunked_body_over_the_limit_is_413_before_it_is_read_whole(
        settings: Settings, vhost: str) -> None:
    """No Content-Length to check first: the gateway counts the bytes as they come and
    answers 413 at the limit.  The body goes on until the gateway has answered (its
    /metrics count the 413), so an answer only after the whole body fails the test."""
    limit, chunk, total = 64 * 1024, b" " * 65536, 64 * 1024 * 1024
    settings = settings.model_copy(update={"limits": settings.limits.model_copy(
        update={"max_body_bytes": limit})})
    sent = 0

    async with serving(gateway_settings(settings, vhost, timeout_s=1)) as http:
        async def answered() -> bool:
            metrics = (await http.get("/metrics")).text
            return 'upsert_gateway_requests_total{status="413"}' in metrics

        async def until_answered() -> AsyncIterator[bytes]:  # at most 64 MiB
            nonlocal sent
            while sent < total and not (sent > limit and await answered()):
                sent += len(chunk)
                yield chunk

        async with httpx.AsyncClient(base_url=http.base_url, timeout=60) as other:
            response = await other.put(samples.ARMOR_PATH, content=until_answered(),
                                       headers=HEADERS)
        within = await http.put(samples.ARMOR_PATH, content=_chunks(b"[]"), headers=HEADERS)
    assert "content-length" not in response.request.headers  # chunked indeed
    assert_problem(response, 413, samples.ARMOR_PATH)
    assert sent < total  # answered while the body was still coming: never read whole
    # Under the limit, a chunked body goes through (no worker runs here: 504, queued).
    assert within.status_code == 504


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def test_a_too_long_idempotency_key_is_400_naming_it(settings: Settings,
                                                           vhost: str) -> None:
    """A message_id AMQP cannot carry (over 255 UTF-8 bytes) is the client's mistake."""
    async with serving(gateway_settings(settings, vhost)) as http:
        long_key = await http.put(samples.ARMOR_PATH, content=b"[]",
                                  headers={**HEADERS, "idempotency-key": "k" * 300})
        long_type = await http.put(samples.ARMOR_PATH, content=b"[]", headers={
            **HEADERS, "content-type": "application/json; x=" + "y" * 300})
    detail = assert_problem(long_key, 400, samples.ARMOR_PATH)["error"]["detail"]
    assert detail == "Idempotency-Key is 300 bytes long (UTF-8); at most 255 are allowed"
    assert "Content-Type is 320 bytes" in assert_problem(
        long_type, 400, samples.ARMOR_PATH)["error"]["detail"]
    assert await queue_depth(vhost, REQUEST_QUEUE) == 0  # nothing was published


async def test_a_publish_not_confirmed_in_time_is_503_with_the_message_id(
        settings: Settings, vhost: str) -> None:
    """The broker confirms no publish within a microsecond (amqp.publish_timeout_s): the
    batch may or may not be queued, and the client is told to retry with its key."""
    settings = settings.model_copy(update={"amqp": settings.amqp.model_copy(
        update={"publish_timeout_s": 0.000001})})
    async with serving(gateway_settings(settings, vhost, timeout_s=2)) as http:
        response = await http.put(samples.ARMOR_PATH, content=b"[]",
                                  headers={**HEADERS, "idempotency-key": "unconfirmed-1"})
    body = assert_problem(response, 503, samples.ARMOR_PATH)
    assert body["error"]["title"] == "Service Unavailable"
    assert body["debug"]["messageID"] == "unconfirmed-1"
    assert body["error"]["detail"] == (
        "batch unconfirmed-1 was not confirmed by the broker, so it may not be queued: "
        "retry with Idempotency-Key: unconfirmed-1 (never applied twice)")


async def test_a_reply_lost_with_the_connection_is_504_queued(settings: Settings,
                                                              vhost: str) -> None:
    """The batch was confirmed (it is in the queue) when the gateway's broker connection
    went: its reply cannot come, but the batch will be applied.  The client must hear
    "queued", not "not queued" (a 503 would invite a retry without the key)."""
    async with serving(gateway_settings(settings, vhost)) as http:
        put = asyncio.create_task(http.put(
            samples.ARMOR_PATH, content=b"[]",
            headers={**HEADERS, "idempotency-key": "lost-1"}))
        await wait_until(lambda: queue_depth(vhost, REQUEST_QUEUE))  # no worker: it waits
        await asyncio.sleep(0.3)  # the confirm, sent as the queue took it, has arrived
        assert close_connections(vhost, "vbapi-upsert-client", "test: the node is gone") == 1
        response = await asyncio.wait_for(put, 15)
    body = assert_problem(response, 504, samples.ARMOR_PATH)
    assert body["debug"]["messageID"] == "lost-1"
    assert body["error"]["detail"] == (
        "its reply was lost with the gateway's broker connection; batch lost-1 was queued "
        "and will be applied: retry with Idempotency-Key: lost-1 to get its reply (never "
        "applied twice)")
    assert await queue_depth(vhost, REQUEST_QUEUE) == 1


async def run_gateway(config: Path) -> tuple[int, str]:
    """``upsert-worker gateway --config FILE`` as a person runs it: its exit code and
    standard error.  One that does not exit within 30 s (it serves) is stopped: -1."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", "gateway", "--config", str(config),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=os.environ)
    try:
        _, err = await asyncio.wait_for(process.communicate(), 30)
    except TimeoutError:
        process.kill()
        await process.wait()
        return -1, ""
    assert process.returncode is not None
    return process.returncode, err.decode()


async def test_anonymous_beyond_loopback_refuses_to_start(settings: Settings, vhost: str,
                                                          tmp_path: Path) -> None:
    """Without api_keys anyone who reaches the gateway writes every database: on a
    non-loopback address it starts only with allow_anonymous = true, said explicitly."""
    exposed = gateway_settings(settings, vhost, listen=f"0.0.0.0:{free_port()}")
    code, err = await run_gateway(write_settings(tmp_path / "gateway.toml", exposed))
    assert code == 2, err
    assert "refusing to start" in err and "is not loopback" in err
    assert "[gateway.api_keys]" in err and "sha256" in err  # how to set keys
    assert "[gateway] allow_anonymous = true" in err  # or how to allow it explicitly
    # Refused at start, in process too; loopback, keys or the explicit setting serve.
    with pytest.raises(GatewayRefused, match="allow_anonymous"):
        await Gateway(exposed).start()
    for listen in ("127.0.0.1:8080", "127.1.2.3:8080", "localhost:8080", "[::1]:8080",
                   ":8080"):
        check_exposure(GatewaySettings(listen=listen))
    check_exposure(GatewaySettings(listen="0.0.0.0:8080", allow_anonymous=True))
    check_exposure(GatewaySettings(listen="[::]:8080", api_keys={"a": digest("k")}))
    for listen in ("[::]:8080", "gateway.example:8080", "10.0.0.1:8080"):
        with pytest.raises(GatewayRefused):
            check_exposure(GatewaySettings(listen=listen))


def test_listen_is_checked_when_the_configuration_loads() -> None:
    assert GatewaySettings(listen="[::1]:8080").host_port == ("::1", 8080)
    assert GatewaySettings(listen=":9000").host_port == ("127.0.0.1", 9000)
    for wrong in ("8080", "127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000", "::1:8080"):
        with pytest.raises(ValueError, match="listen must be host:port"):
            GatewaySettings(listen=wrong)


async def test_a_plain_http_request_on_the_wire(settings: Settings, vhost: str,
                                                worker: Worker) -> None:
    """As an outside system sends it: HTTP/1.1 bytes on a socket, gzip body."""
    body = gzip.compress(orjson.dumps([samples.armor(7)]))
    async with serving(gateway_settings(settings, vhost)) as http:
        port = http.base_url.port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PUT /armor-code-ex-codes-batch HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nContent-Encoding: gzip\r\n"
                     b"vbasoftware-database: demo\r\nConnection: close\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 30)
        writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 207 ")
    assert orjson.loads(payload)["data"][0]["status"] == 201


async def test_openapi_health_and_metrics(settings: Settings, vhost: str) -> None:
    async with serving(gateway_settings(settings, vhost, timeout_s=0.3)) as http:
        document = (await http.get("/openapi.json")).json()
        health = await http.get("/healthz")
        ready = await http.get("/readyz")
        timed_out = await http.put("/no-such-batch", content=b"[]", headers=HEADERS)
        metrics = (await http.get("/metrics")).text
    assert document["openapi"].startswith("3.")
    assert len(document["paths"]) == 730
    benefit = document["paths"]["/benefits-batch"]["put"]
    assert benefit["requestBody"]["content"]["application/json"]["schema"]["items"] == {
        "$ref": "#/components/schemas/Benefit"}
    assert document["components"]["schemas"]["Benefit"]["properties"]["benefit_Code"][
        "maxLength"] == 10
    assert health.status_code == 200 and ready.status_code == 200
    assert timed_out.status_code == 504  # no worker runs here
    assert 'upsert_gateway_requests_total{status="504"} 1.0' in metrics


def test_the_openapi_document_validates() -> None:
    """Against the OpenAPI 3.1 schema (openapi-spec-validator).  Validating all 730 paths
    takes half a minute; these entities take every path of the generator: the seeds, an
    array of objects, the widest model, a scope parameter, a date-time key."""
    registry = default_registry()
    names = ["Benefit", "ArmorCodeExCode", "GroupFlexSchedule", "GroupPlanYear",
             "SubscriberFlexExported", "Criteria", "ClaimBatch", "PlanLineage", "ProviderPayee"]
    subset = Registry(tuple(dataclasses.replace(registry.by_name(n), parents=())
                            for n in names))
    validate(openapi_document(subset))
    whole = openapi_document(registry)
    assert len(whole["paths"]) == 730
    assert set(whole["components"]["schemas"]) == {e.name for e in registry.entities} | {
        "Reply", "Problem"}
