"""The HTTP gateway against the real broker, database and worker: the API's own paths."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import uvicorn
from openapi_spec_validator import validate
from pydantic import SecretStr

from schemas.registry import Registry, default_registry
from tests import samples
from tests.running import running
from tests.services import amqp_url, free_port, rabbitmqctl
from worker.gateway import Gateway, GatewayRefused, build_app
from worker.gateway_openapi import openapi_document
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
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_app(gateway), host="127.0.0.1", port=port,
                                           log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                     timeout=60) as http:
            yield http
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        await gateway.stop()


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
    assert too_big.status_code == 413  # refused by the gateway before it is read


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
    assert unknown.status_code == 401 and missing.status_code == 401
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
    assert response.status_code == 504
    body = response.json()
    assert body["debug"]["messageID"] == "slow-1"
    assert "slow-1 is queued and will be applied" in body["error"]["detail"]


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
