"""structlog setup: JSON lines by default, readable console output on a terminal.

Every line logged while a delivery is handled carries its ids (activity id, message id,
correlation id, path, database), whichever module logs it (the consumer, the processor, the
store, the migrations): the consumer binds them once per delivery with structlog's
contextvars (worker/amqp/consumer.py), and ``merge_contextvars``, first below, puts them on
every line.  A group commit's task names its batches instead (``message_ids``,
``activity_ids``; worker/store/grouping.py).  Item payloads are never logged, and the
configuration's secrets are masked in every line.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

import orjson
import structlog

from worker.redaction import redact
from worker.settings import LogSettings


def _orjson_dumps(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def configure_logging(settings: LogSettings, secrets: Sequence[str] = ()) -> None:
    """Where and how the worker logs; ``secrets`` (worker.redaction.secrets_of) are
    masked in every line, whatever quotes them: an exception's text, a traceback."""
    use_console = settings.format == "console" or (
        settings.format == "auto" and sys.stderr.isatty())
    renderer: Any = (structlog.dev.ConsoleRenderer() if use_console
                     else structlog.processors.JSONRenderer(serializer=_orjson_dumps))
    level = getattr(logging, settings.level.upper())
    masking = _Masking(secrets)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks if not use_console
            else structlog.dev.set_exc_info,
            masking.values,
            renderer,
            # Again on the line: the console renderer formats tracebacks itself.
            masking.line,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


class _Masking:
    """Processors that mask secrets: in the values of an event (before rendering, where
    they are as written or as repr() quotes them), and in the rendered line."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self.secrets = secrets

    def values(self, _logger: Any, _name: str, event: MutableMapping[str, Any]
               ) -> Mapping[str, Any]:
        return {k: self._masked(v) for k, v in event.items()} if self.secrets else event

    def line(self, _logger: Any, _name: str, line: Any) -> Any:
        # The renderer's output, which structlog hands on as if it were the event.
        return redact(line, self.secrets) if isinstance(line, str) else line

    def _masked(self, value: Any) -> Any:
        if isinstance(value, str):
            return redact(value, self.secrets)
        if isinstance(value, dict):
            return {k: self._masked(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._masked(v) for v in value]
        if isinstance(value, tuple):  # exc_info too: a tuple it must stay
            return tuple(self._masked(v) for v in value)
        return value


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
