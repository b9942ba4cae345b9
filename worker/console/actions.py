"""What operators do at the console (POST, each with the session's CSRF token): log in and
out, preview a replay, replay, purge.  Every action is logged and counted with the
operator's name (``upsert_console_actions_total{operator,action}``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from worker.amqp.deadletters import Selection
from worker.console import dryrun
from worker.console.auth import check_key, form, log_in
from worker.console.context import Console
from worker.console.letters import Filters, chosen

PREVIEW_TIMEOUT_S = 10.0


def refused(console: Console, request: Request) -> Response:
    return console.render(request, "refused.html", status_code=403)


Action = Callable[[Console, Request, str, dict[str, str]], Awaitable[Response]]


def operator_action(action: Action) -> Callable[[Console, Request], Awaitable[Response]]:
    """An action only a logged-in operator may take, with the session's CSRF token: the
    handler gets the operator's name and the form's fields; anyone else is refused."""
    async def handler(console: Console, request: Request) -> Response:
        operator, fields = console.operator(request), await form(request)
        if operator is None or fields is None:
            return refused(console, request)
        return await action(console, request, operator, fields)

    handler.__name__ = action.__name__
    handler.__doc__ = action.__doc__
    return handler


async def login_page(console: Console, request: Request) -> Response:
    return console.render(request, "login.html", failed=False)


async def login(console: Console, request: Request) -> Response:
    fields = await form(request)
    if fields is None:
        return refused(console, request)
    name = fields.get("operator", "")
    if not check_key(console.settings.console, name, fields.get("key", "")):
        console.record("-", "login refused")
        return console.render(request, "login.html", status_code=401, failed=True)
    log_in(request, name)
    console.record(name, "login")
    return RedirectResponse("/", status_code=303)


async def logout(console: Console, request: Request) -> Response:
    if await form(request) is None:
        return refused(console, request)
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


def _selection_values(fields: dict[str, str]) -> dict[str, Any]:
    """What the next form carries to act on the same dead letters."""
    return {"id": fields.get("id", ""), "filters": Filters.of(fields)}


@operator_action
async def preview(console: Console, request: Request, operator: str,
                  fields: dict[str, str]) -> Response:
    async with console.lock:
        letters = chosen(await console.queue.letters(), fields)
        console.record(operator, "preview", dead_letters=[d.id for d in letters])
        answers = await dryrun.preview(console.queue, letters, PREVIEW_TIMEOUT_S)
    return console.render(request, "preview.html", answers=answers,
                          **_selection_values(fields))


@operator_action
async def replay(console: Console, request: Request, operator: str,
                 fields: dict[str, str]) -> Response:
    async with console.lock:
        ids = [d.id for d in chosen(await console.queue.letters(), fields)]
        result = await console.queue.replay(Selection(ids=ids)) if ids else None
    done = [d.row() for d in result.done] if result else []
    console.record(operator, "replay", dead_letters=[d["id"] for d in done],
                   failed=sorted(result.failed) if result else [])
    return console.render(request, "done.html", action="Replayed", done=done,
                          failed=result.failed if result else {},
                          note="Each reply went to its batch's reply_to queue.")


async def purge_page(console: Console, request: Request) -> Response:
    if console.operator(request) is None:
        return console.login_redirect()
    fields = dict(request.query_params)
    count = len(chosen(await console.letters(), fields))
    return console.render(request, "purge.html", count=count, changed=False,
                          **_selection_values(fields))


@operator_action
async def purge(console: Console, request: Request, operator: str,
                fields: dict[str, str]) -> Response:
    async with console.lock:
        letters = chosen(await console.queue.letters(), fields)
        if str(len(letters)) != fields.get("expected"):
            # The set changed since the confirmation: confirm again, with the new count.
            changed = True
        else:
            changed = False
            result = await console.queue.purge(Selection(ids=[d.id for d in letters]))
    if changed:
        return console.render(request, "purge.html", count=len(letters), changed=True,
                              **_selection_values(fields))
    done = [d.row() for d in result.done]
    console.record(operator, "purge", dead_letters=[d["id"] for d in done])
    return console.render(request, "done.html", action="Purged", done=done,
                          failed=result.failed, note="")
