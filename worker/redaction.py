"""Keeps the configuration's secrets out of what the worker says: log lines, command
output, replies and dead-letter headers.

Drivers and URL parsers quote what they were given: a password holding an unencoded "/"
ends up in "invalid literal for int() with base 10: 's3cret'" (the part before the "/"
read as a port), a DSN in a message about it.  Whatever text leaves the process is passed
through :func:`redact` with the secrets of the configuration (:func:`secrets_of`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote

import orjson

from worker.core.errors import UpsertError
from worker.settings import Settings

MASK = "***"
# Where URL parsers cut a URL, and so where they may cut a password that was not
# percent-encoded: each piece can turn up on its own.
_URL_DELIMITERS = re.compile(r"[/?#@:,\[\]]")
# Shorter pieces are not masked on their own: they give little of a password away, and
# masking them would garble ordinary words of every line.
_MIN_PIECE = 4


def secrets_of(settings: Settings) -> tuple[str, ...]:
    """Every secret of the configuration in every form a message may quote it, longest
    first (so that a piece never unmasks the rest of what contains it)."""
    amqp = settings.amqp
    urls = [*amqp.urls, *(db.dsn.get_secret_value() for db in settings.databases.values())]
    if amqp.management_url is not None:
        urls.append(amqp.management_url.get_secret_value())
    found = {piece for url in urls for password in _passwords(url)
             for piece in _pieces(password) | _pieces(unquote(password))}
    if amqp.signing_key is not None:
        found.add(amqp.signing_key.get_secret_value())
    if settings.console.session_key is not None:
        found.add(settings.console.session_key.get_secret_value())
    forms = {form for secret in found for form in _quoted_forms(secret)}
    return tuple(sorted(forms - {""}, key=len, reverse=True))


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ***."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _passwords(url: str) -> list[str]:
    """The password of a URL or DSN: its user information up to the last "@" (as a
    lenient parser reads it), and a ``password`` query parameter."""
    _, _, rest = url.partition("://")
    userinfo, at, _ = rest.rpartition("@")
    found = [userinfo.partition(":")[2]] if at else []
    found += [value for key, value in parse_qsl(rest.partition("?")[2]) if key == "password"]
    return found


def _pieces(password: str) -> set[str]:
    pieces = {p for p in _URL_DELIMITERS.split(password) if len(p) >= _MIN_PIECE}
    return {password, *pieces}


def _quoted_forms(secret: str) -> set[str]:
    # As written and percent-decoded, each also as repr() and JSON escape it.
    forms = set()
    for text in (secret, unquote(secret)):
        forms |= {text, repr(text)[1:-1], orjson.dumps(text).decode()[1:-1]}
    return forms


def mask_detail(error: UpsertError, secrets: Iterable[str]) -> UpsertError:
    """``error`` with the secrets masked in its detail, which its reply and dead letter
    quote (a database error may quote what the driver was given)."""
    error.detail = redact(error.detail, secrets)
    error.args = (error.detail,)
    return error
