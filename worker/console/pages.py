"""The console's pages (GET): overview and its fragment, dead letters, a dead letter,
messages.  Each needs a logged-in operator (none with no operators configured)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from worker.amqp.queue_status import broker_status
from worker.console import history
from worker.console.context import Console
from worker.console.letters import Filters, page_number, page_of, row
from worker.console.sampling import SERIES


async def overview(console: Console, request: Request) -> Response:
    if console.operator(request) is None:
        return console.login_redirect()
    return console.render(request, "overview.html", **await _overview_values(console))


async def overview_fragment(console: Console, request: Request) -> Response:
    if console.operator(request) is None:
        return Response("not logged in", status_code=401, media_type="text/plain")
    return console.render(request, "overview_fragment.html",
                          **await _overview_values(console))


async def _overview_values(console: Console) -> dict[str, Any]:
    settings = console.settings
    try:
        status = await broker_status(settings.amqp, settings.retry, settings.limits,
                                     count_dead=False)
        queues, broker_error = status.queues, None
    except Exception as e:
        queues, broker_error = [], f"the broker did not answer ({type(e).__name__})"
    rates = console.sampler.rates()
    rows = [{"what": "items" if name == "upsert_items_total" else "batches",
             "database": database, "label": label, "rate": value}
            for (name, database, label), value in sorted(rates.items())]
    return {"queues": queues, "broker_error": broker_error, "rates": rows,
            "health": console.sampler.health, "series": SERIES,
            "window_s": int(console.sampler.window_s)}


async def dead_letters(console: Console, request: Request) -> Response:
    if console.operator(request) is None:
        return console.login_redirect()
    filters = Filters.of(request.query_params)
    page = page_of(await console.letters(), filters,
                   page_number(request.query_params.get("page")))
    return console.render(request, "dead_letters.html", page=page, filters=filters)


async def dead_letter(console: Console, request: Request) -> Response:
    if console.operator(request) is None:
        return console.login_redirect()
    wanted = request.path_params["id"]
    found = [d for d in await console.letters() if d.id == wanted]
    if not found:
        return console.render(request, "missing.html", status_code=404, id=wanted)
    letter = found[0]
    details = letter.details(console.settings.limits)
    body = details["body"]
    recorded: list[dict[str, Any]] = []
    message_id = letter.properties.get("message_id")
    if message_id and letter.database in console.settings.databases:
        recorded, _ = await history.lookup(console.settings, message_id,
                                           letter.user_id or "", letter.database)
    replies = recorded[0]["items"] if recorded else []
    items = ([{"n": n, "json": _pretty(item),
               "reply": replies[n - 1] if n <= len(replies) else None}
              for n, item in enumerate(body, 1)] if isinstance(body, list) else [])
    return console.render(
        request, "dead_letter.html", letter=row(letter), detail=letter.error_detail,
        headers=_pretty(details["headers"]), properties=_pretty(details["properties"]),
        items=items, body=None if items else _pretty(body), recorded=recorded[:1])


async def messages(console: Console, request: Request) -> Response:
    if console.operator(request) is None:
        return console.login_redirect()
    query = request.query_params
    message_id = query.get("message_id", "").strip()[:255]
    producer = query.get("producer", "").strip()[:255]
    database = query.get("database", "").strip()[:255]
    found: list[dict[str, Any]] = []
    failed: list[str] = []
    if message_id:
        found, failed = await history.lookup(console.settings, message_id,
                                             producer or None, database or None,
                                             console.secrets)
    return console.render(request, "messages.html", message_id=message_id,
                          producer=producer, database=database, found=found,
                          failed=failed, searched=bool(message_id),
                          databases=console.databases)


def _pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS,
                        default=str).decode()
