"""Who may reach the gateway: without API keys anyone who reaches it may write every
database, so it then listens on loopback only (development), unless anonymous access is
allowed explicitly (``[gateway] allow_anonymous = true``)."""

from __future__ import annotations

import ipaddress

from worker.core.errors import OperatorError
from worker.settings import GatewaySettings


class GatewayRefused(OperatorError):
    """The gateway cannot serve as configured (said at start, before any request)."""


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def check_exposure(settings: GatewaySettings) -> None:
    """Refuse to serve anonymously beyond this machine unless told to, explicitly."""
    host, port = settings.host_port
    if settings.api_keys is not None or settings.allow_anonymous or is_loopback(host):
        return
    raise GatewayRefused(
        f"listen = {settings.listen!r} is not loopback, and without [gateway.api_keys] "
        f"anyone who reaches it could write every database. Either set API keys: a "
        f"[gateway.api_keys] table of producer = \"sha256:<hex digest of its key>\" "
        f"(printf %s \"$KEY\" | sha256sum); or allow anonymous access explicitly: "
        f"[gateway] allow_anonymous = true (UPSERT_GATEWAY__ALLOW_ANONYMOUS=true); or, for "
        f"development, listen on loopback (127.0.0.1:{port})")


def mode(settings: GatewaySettings) -> str:
    """How the gateway lets producers in: "api keys", "development" (loopback, no keys)
    or "anonymous"."""
    if settings.api_keys is not None:
        return "api keys"
    return "development" if is_loopback(settings.host_port[0]) else "anonymous"
