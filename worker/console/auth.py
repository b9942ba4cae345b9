"""Who is at the console: operators log in with their name and key (``[console.operators]``,
each key given as its SHA-256 digest, like the gateway's api_keys).  The session is a
cookie signed with ``[console] session_key`` (Starlette's SessionMiddleware,
itsdangerous), HttpOnly and SameSite=Strict; every POST carries the session's CSRF token.

Without operators nobody logs in: the console then listens on loopback only (the
gateway's rule, worker/http/exposure.py) and every action is the operator ``local``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import parse_qs

from starlette.requests import Request

from worker.core.errors import OperatorError
from worker.http.exposure import is_loopback
from worker.settings import ConsoleSettings

LOCAL_OPERATOR = "local"
SESSION_COOKIE = "upsert_console"
SESSION_MAX_AGE_S = 8 * 3600
MAX_FORM_BYTES = 64 * 1024


class ConsoleRefused(OperatorError):
    """The console cannot serve as configured (said at start)."""


def check_exposure(settings: ConsoleSettings) -> None:
    """Without operators anyone who reaches the console may replay and purge: loopback
    only, as the gateway without api keys."""
    host, port = settings.host_port
    if settings.operators is not None or is_loopback(host):
        return
    raise ConsoleRefused(
        f"listen = {settings.listen!r} is not loopback, and without [console.operators] "
        f"anyone who reaches the console could replay and purge dead letters. Either set "
        f"operators: a [console.operators] table of name = \"sha256:<hex digest of its "
        f"key>\" (printf %s \"$KEY\" | sha256sum); or listen on loopback (127.0.0.1:{port})")


def session_secret(settings: ConsoleSettings) -> str:
    """The configured session key, else a random one for this process (a restart then
    logs everyone out)."""
    if settings.session_key is not None:
        return settings.session_key.get_secret_value()
    return secrets.token_urlsafe(32)


def operator_of(request: Request, settings: ConsoleSettings) -> str | None:
    """The operator of this request's session, or None (not logged in)."""
    if settings.operators is None:
        return LOCAL_OPERATOR
    name = request.session.get("operator")
    return name if isinstance(name, str) and name in settings.operators else None


def check_key(settings: ConsoleSettings, name: str, key: str) -> bool:
    """Whether ``key`` is the key of the operator ``name`` (in constant time)."""
    expected = (settings.operators or {}).get(name)
    given = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    # Compared even for an unknown name, so that timing tells no names.
    return hmac.compare_digest(given, expected or "sha256:" + "0" * 64) and expected is not None


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def log_in(request: Request, name: str) -> None:
    """A new session for ``name``, with a new CSRF token."""
    request.session.clear()
    request.session["operator"] = name
    request.session["csrf"] = secrets.token_urlsafe(32)


async def form(request: Request) -> dict[str, str] | None:
    """The url-encoded form of a POST (first value of each field), or None when it is too
    large or its CSRF token is not the session's."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return None
    fields = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"),
                                           keep_blank_values=True).items()}
    expected = request.session.get("csrf")
    given = fields.get("csrf", "")
    if not isinstance(expected, str) or not hmac.compare_digest(given, expected):
        return None
    return fields
