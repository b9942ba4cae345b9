"""What every page and action of the console shares: the settings, the dead-letter queue
(one command at a time: a command holds the whole queue), the sampler, the templates, the
operators' action counter, and rendering with the configuration's secrets masked."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from prometheus_client import CollectorRegistry, Counter
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from worker.amqp.deadletters import DeadLetterQueue
from worker.amqp.letters import DeadLetter
from worker.console.auth import csrf_token, operator_of
from worker.console.sampling import Sampler
from worker.logs import get_logger
from worker.redaction import redact, secrets_of
from worker.settings import Settings

TEMPLATES = Path(__file__).parent / "templates"
log = get_logger("worker.console")


class Console:
    """The console's state, for the life of the process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.secrets = secrets_of(settings)
        self.queue = DeadLetterQueue(settings.amqp, settings.limits, settings.retry)
        self.lock = asyncio.Lock()
        self.sampler = Sampler(list(settings.console.workers))
        self.templates = Environment(loader=FileSystemLoader(TEMPLATES),
                                     autoescape=select_autoescape(["html"]))
        self.metrics = CollectorRegistry()
        self.actions = Counter("upsert_console_actions_total",
                               "Operator actions at the console, by operator",
                               ["operator", "action"], registry=self.metrics)

    @property
    def databases(self) -> list[str]:
        return sorted(self.settings.databases)

    async def letters(self) -> list[DeadLetter]:
        """Every dead letter in queue order (the queue left as it was)."""
        async with self.lock:
            return await self.queue.letters()

    def operator(self, request: Request) -> str | None:
        return operator_of(request, self.settings.console)

    def login_redirect(self) -> Response:
        return RedirectResponse("/login", status_code=303)

    def record(self, operator: str, action: str, **what: Any) -> None:
        """An operator's action: logged with who did it, and counted."""
        self.actions.labels(operator=operator, action=action).inc()
        log.info("console action", operator=operator, action=action, **what)

    def render(self, request: Request, template: str, status_code: int = 200,
               **values: Any) -> HTMLResponse:
        """The page, with the configuration's secrets masked should any value quote one."""
        page = self.templates.get_template(template).render(
            operator=self.operator(request), csrf=csrf_token(request),
            login=self.settings.console.operators is not None,
            refresh_ms=int(self.settings.console.sample_interval_s * 1000), **values)
        return HTMLResponse(redact(page, self.secrets), status_code=status_code)
