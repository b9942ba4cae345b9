"""The operator console in a real browser: Playwright driving Debian's Chromium
(/usr/bin/chromium; nothing is downloaded), every element found by its role and
accessible name as a screen reader finds it.  One operator's story: log in, see the
counts, filter the dead letters and open one, preview and replay it, purge another, look
up a message.  Each page is saved as a screenshot into docs/ (the README shows them)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright, expect

from tests.support.console_support import (
    KEY,
    OPERATOR,
    console_settings,
    put_dead,
    serving_console,
)
from tests.support.operations_support import dead_count, dead_letter_queue
from tests.support.paths import DOCS
from tests.support.running import running
from tests.support.services import amqp_url, free_port
from worker.amqp.deadletters import Selection
from worker.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    return CHROMIUM


async def shot(page: Page, name: str) -> None:
    await page.screenshot(path=str(DOCS / f"console-{name}.png"), full_page=True)


async def go(page: Page, name: str) -> None:
    """Follow a link of the console's navigation."""
    await page.get_by_role("navigation", name="Console").get_by_role("link", name=name).click()


async def log_in(page: Page, base: str) -> None:
    await page.goto(base + "/")
    await expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    await page.get_by_label("Operator").fill(OPERATOR)
    await page.get_by_label("Key").fill("a wrong key")
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("alert")).to_have_text("Unknown operator or wrong key.")
    await page.get_by_label("Operator").fill(OPERATOR)
    await page.get_by_label("Key").fill(KEY)
    await shot(page, "login")
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()


async def see_the_counts(page: Page) -> None:
    queues = page.get_by_role("table", name="Queues")
    await expect(queues.get_by_role("row", name=re.compile(r"^vbapi\.dead 3 "))).to_be_visible()
    await expect(queues.get_by_role("row", name=re.compile(r"^vbapi\.requests "))
                 ).to_be_visible()
    workers = page.get_by_role("table", name="Worker processes")
    await expect(workers.get_by_role("row", name=re.compile("200 ready"))).to_be_visible()


async def filter_and_open(page: Page) -> None:
    await go(page, "Dead letters")
    await expect(page.get_by_role("heading", name="Dead letters")).to_be_visible()
    await expect(page.get_by_text("3 dead letters (all)")).to_be_visible()
    await page.get_by_label("Status").fill("404")
    await page.get_by_label("Database").fill("demo")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.get_by_text("2 dead letters (status 404, database demo)")
                 ).to_be_visible()
    assert "status=404" in page.url and "database=demo" in page.url  # a link to share
    await shot(page, "dead-letters")
    await page.get_by_role("link", name="act-00000").click()
    await expect(page.get_by_role("heading", name="Dead letter act-00000")).to_be_visible()
    items = page.get_by_role("table", name=re.compile("^Body, item by item"))
    await expect(items.get_by_role("row")).to_have_count(3)  # the header and 2 items
    await expect(page.get_by_text("404 Not Found: database 'demo' is not configured",
                                  exact=True)).to_be_visible()
    await shot(page, "dead-letter")


async def preview_and_replay(page: Page, url: str) -> None:
    await page.get_by_role("button", name="Preview replay").click()
    await expect(page.get_by_role("heading", name="Preview replay")).to_be_visible()
    answers = page.get_by_role("table", name=re.compile("^Dead letter act-00000"))
    await expect(answers.get_by_role("cell", name="201")).to_have_count(2)
    await shot(page, "preview")
    assert await dead_count(url) == 3  # a dry run: nothing replayed, nothing written
    await page.get_by_role("button", name="Replay").click()
    await expect(page.get_by_role("status")).to_contain_text("Replayed 1 dead letter")
    await shot(page, "replayed")
    assert await dead_count(url) == 2


async def purge_one(page: Page, url: str) -> None:
    await go(page, "Dead letters")
    await page.get_by_role("link", name="act-00001").click()
    await page.get_by_role("button", name="Purge").click()
    await expect(page.get_by_text("Purge deletes 1 dead letter (id act-00001)")
                 ).to_be_visible()
    await shot(page, "purge")
    await page.get_by_role("button", name="Purge 1 dead letter").click()
    await expect(page.get_by_role("status")).to_contain_text("Purged 1 dead letter")
    assert await dead_count(url) == 1


async def look_up(page: Page) -> None:
    await go(page, "Messages")
    await page.get_by_label("Message id").fill("msg-00000")
    await page.get_by_label("Database").select_option("demo")
    await page.get_by_role("button", name="Look up").click()
    found = page.get_by_role("region", name="Message msg-00000 in demo")
    await expect(found.get_by_role("cell", name="201")).to_have_count(2)
    await expect(found.get_by_text("Reply status")).to_be_visible()
    await shot(page, "messages")


async def see_the_rates(page: Page, settings: Settings) -> None:
    """The replayed items show as a rate; the overview refreshes itself, without a reload."""
    await go(page, "Overview")
    await page.evaluate("window.notReloaded = true")
    rates = page.get_by_role("table", name=re.compile("^Items and batches per second"))
    await expect(rates.get_by_role("row", name=re.compile(r"^items demo 201 "))
                 ).to_be_visible(timeout=20_000)
    queues = page.get_by_role("table", name="Queues")
    await expect(queues.get_by_role("row", name=re.compile(r"^vbapi\.dead 1 "))).to_be_visible()
    await shot(page, "overview")
    await dead_letter_queue(settings).purge(Selection(all_=True))
    await expect(queues.get_by_role("row", name=re.compile(r"^vbapi\.dead 0 "))).to_be_visible()
    assert await page.evaluate("window.notReloaded") is True


@pytest.mark.timeout(300)
async def test_an_operators_story(settings: Settings, vhost: str, chromium: Path) -> None:
    metrics_port = free_port()
    settings = settings.model_copy(update={"metrics": settings.metrics.model_copy(
        update={"port": metrics_port, "host": "127.0.0.1"})})
    settings = console_settings(settings, workers=[f"http://127.0.0.1:{metrics_port}"])
    url = amqp_url(vhost)
    await put_dead(url, 3, status_of=lambda n: 503 if n == 1 else 404)
    async with running(settings), serving_console(settings) as (base, _), \
            async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(chromium))
        try:
            page = await browser.new_page(viewport={"width": 1200, "height": 800})
            await log_in(page, base)
            await see_the_counts(page)
            await filter_and_open(page)
            await preview_and_replay(page, url)
            await purge_one(page, url)
            await look_up(page)
            await see_the_rates(page, settings)
        finally:
            await browser.close()
