"""structlog setup: JSON lines by default, readable console output on a terminal.

Context (activity id, message id, ...) is bound per batch with contextvars, so every line
a batch causes carries it.  Item payloads and secrets are never logged.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog

from worker.settings import LogSettings


def _orjson_dumps(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def configure_logging(settings: LogSettings) -> None:
    use_console = settings.format == "console" or (
        settings.format == "auto" and sys.stderr.isatty())
    renderer: Any = (structlog.dev.ConsoleRenderer() if use_console
                     else structlog.processors.JSONRenderer(serializer=_orjson_dumps))
    level = getattr(logging, settings.level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks if not use_console
            else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
