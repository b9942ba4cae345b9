"""The operator console without a browser: each defence tried by the attack it stops
(no login, a wrong key, a forged session cookie, a POST without the session's CSRF token,
script in a dead letter, secrets quoted by what a page shows), and the actions counted
per operator.  The pages in a real browser: test_console_browser.py."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import aio_pika
import httpx
import orjson
import pytest
from itsdangerous import TimestampSigner
from pydantic import SecretStr

from tests.support.console_support import (
    KEY,
    OPERATOR,
    SESSION_KEY,
    console_settings,
    put_dead,
    serving_console,
)
from tests.support.operations_support import dead_count, dead_headers, dead_letter_queue
from tests.support.samples import benefit
from tests.support.services import amqp_url
from tests.support.waiting import wait_until
from worker.amqp.deadletters import Selection
from worker.amqp.topology import DEAD_QUEUE
from worker.console import history
from worker.service import Worker
from worker.settings import Settings

DB_PASSWORD = "pg-s3cret-never-shown"


@pytest.fixture
async def http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serving_console(console_settings(settings)) as (base, _), \
            httpx.AsyncClient(base_url=base, timeout=60) as client:
        yield client


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


async def log_in(http: httpx.AsyncClient, key: str = KEY) -> httpx.Response:
    token = csrf_of((await http.get("/login")).text)
    return await http.post("/login", data={"csrf": token, "operator": OPERATOR, "key": key})


async def test_pages_need_a_login_and_a_wrong_key_gets_none(http: httpx.AsyncClient) -> None:
    for path in ("/", "/dead-letters", "/dead-letters/x", "/messages?message_id=m"):
        response = await http.get(path)
        assert response.status_code == 303 and response.headers["location"] == "/login"
    assert (await http.get("/overview/fragment")).status_code == 401
    refused = await log_in(http, key="not-the-key")
    assert refused.status_code == 401 and "Unknown operator or wrong key" in refused.text
    assert (await http.get("/")).status_code == 303


async def test_the_session_cookie_is_signed_httponly_and_samesite_strict(
        http: httpx.AsyncClient) -> None:
    response = await log_in(http)
    assert response.status_code == 303 and response.headers["location"] == "/"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    page = await http.get("/")
    assert page.status_code == 200 and "vbapi.dead" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"


async def test_a_forged_session_cookie_is_refused(settings: Settings) -> None:
    """A cookie saying {"operator": "alice"}, signed with any key but the console's."""
    import base64
    import json

    payload = base64.b64encode(json.dumps({"operator": OPERATOR}).encode())
    forged = TimestampSigner("guessed-key").sign(payload).decode()
    async with serving_console(console_settings(settings)) as (base, _), \
            httpx.AsyncClient(base_url=base, cookies={"upsert_console": forged}) as http:
        response = await http.get("/")
        assert response.status_code == 303 and response.headers["location"] == "/login"


async def test_a_post_without_the_sessions_csrf_token_is_refused(
        http: httpx.AsyncClient, vhost: str) -> None:
    await put_dead(amqp_url(vhost), 1)
    await log_in(http)
    page = (await http.get("/dead-letters/purge?id=act-00000")).text
    assert "Purge deletes 1 dead letter" in page
    for action in ("/dead-letters/purge", "/dead-letters/replay", "/dead-letters/preview",
                   "/logout"):
        for token in (None, "", "forged-token"):
            data = {"id": "act-00000", "expected": "1"}
            if token is not None:
                data["csrf"] = token
            response = await http.post(action, data=data)
            assert response.status_code == 403 and "CSRF" in response.text, action
    assert (await http.get("/dead-letters")).status_code == 200  # still logged in
    # Nor a login form posted from elsewhere.
    assert (await http.post("/login", data={"operator": OPERATOR, "key": KEY})
            ).status_code == 403
    assert await dead_count(amqp_url(vhost)) == 1
    response = await http.post("/dead-letters/purge", data={
        "id": "act-00000", "expected": "1", "csrf": csrf_of(page)})
    assert response.status_code == 200 and "Purged 1" in response.text
    assert await dead_count(amqp_url(vhost)) == 0
    metrics = (await http.get("/metrics")).text
    assert f'upsert_console_actions_total{{action="purge",operator="{OPERATOR}"}} 1.0' \
        in metrics


async def test_a_purge_confirmed_for_another_count_is_confirmed_again(
        http: httpx.AsyncClient, vhost: str) -> None:
    await put_dead(amqp_url(vhost), 3)
    await log_in(http)
    token = csrf_of((await http.get("/dead-letters/purge")).text)
    response = await http.post("/dead-letters/purge", data={"expected": "2", "csrf": token})
    assert "changed since the confirmation" in response.text
    assert "Purge deletes 3 dead letters" in response.text
    assert await dead_count(amqp_url(vhost)) == 3


async def test_no_page_shows_a_secret_nor_runs_script_of_a_dead_letter(
        settings: Settings, vhost: str) -> None:
    broken = settings.databases["demo"].model_copy(update={"dsn": SecretStr(
        f"postgresql://root:{DB_PASSWORD}@127.0.0.1:1/nowhere")})
    settings = console_settings(settings.model_copy(update={
        "databases": {**settings.databases, "broken": broken}}))
    await put_dead(amqp_url(vhost), 1, **{
        "path": "/benefits-batch<script>alert(1)</script>",
        "x-upsert-error-detail": f"could not connect: password {DB_PASSWORD} refused"})
    async with serving_console(settings) as (base, _), \
            httpx.AsyncClient(base_url=base, timeout=60) as http:
        await log_in(http)
        pages = [await http.get(path) for path in (
            "/", "/overview/fragment", "/dead-letters", "/dead-letters/act-00000",
            "/messages?message_id=msg-00000", "/dead-letters/purge")]
    for page in pages:
        assert page.status_code == 200, page.url
        for secret in (DB_PASSWORD, SESSION_KEY, KEY, settings.amqp.urls[0],
                       settings.databases["demo"].dsn.get_secret_value()):
            assert secret not in page.text, (page.url, secret)
        assert "<script>alert" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[2].text
    assert "password *** refused" in pages[3].text
    assert "broken:" in pages[4].text  # the database that could not be asked, named


async def test_dead_letters_come_a_page_at_a_time(http: httpx.AsyncClient, vhost: str
                                                  ) -> None:
    await put_dead(amqp_url(vhost), 120, status_of=lambda n: 503 if n % 2 else 404)
    await log_in(http)
    first = (await http.get("/dead-letters")).text
    assert "120 dead letters (all); page 1 of 3" in first
    assert first.count("<tr><td><a href=\"/dead-letters/") == 50
    assert 'href="/dead-letters?page=2">Next page' in first
    last = (await http.get("/dead-letters?status=503&page=2")).text
    assert "60 dead letters (status 503); page 2 of 2" in last
    assert last.count("<tr><td><a href=\"/dead-letters/") == 10
    assert 'href="/dead-letters?status=503&amp;page=1">Previous page' in last


async def test_a_dead_letter_shows_what_each_item_was_answered_where_recorded(
        settings: Settings, vhost: str, worker: Worker, http: httpx.AsyncClient) -> None:
    """Its message_id recorded (the batch landed once, then came back dead-lettered)."""
    url = amqp_url(vhost)
    await put_dead(url, 1)
    await dead_letter_queue(settings).replay(Selection(all_=True))
    await wait_until(lambda: _recorded(settings), 20)
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.default_exchange.publish(aio_pika.Message(
            orjson.dumps([benefit("C0"), benefit("D0")]), message_id="msg-00000",
            headers=dead_headers(0, 503, "demo")), routing_key=DEAD_QUEUE)
    await log_in(http)
    page = (await http.get("/dead-letters/act-00000")).text
    assert page.count("201 Created") == 2, page


async def _recorded(settings: Settings) -> bool:
    found, _ = await history.lookup(settings, "msg-00000", None, "demo")
    return bool(found)
