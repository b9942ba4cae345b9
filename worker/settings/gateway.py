"""``[gateway]``: the HTTP gateway's settings (``upsert-worker gateway``, contract section 8)."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from worker.settings.listen import Listen, split_listen
from worker.settings.sections import Section


def hashed_keys(value: dict[str, str] | None, what: str = "api key"
                ) -> dict[str, str] | None:
    """``value`` if every key is given as its digest ("sha256:" and 64 hex digits); the
    gateway's api_keys and the console's operators."""
    for name, digest in (value or {}).items():
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise ValueError(f"{what} of {name!r} must be 'sha256:' and 64 lower-case "
                             f"hex digits (the digest of the key, never the key itself)")
    return value


class GatewaySettings(Section):
    # host:port the HTTP gateway (`upsert-worker gateway`) listens on; an IPv6 host in
    # brackets ("[::1]:8080").
    listen: Listen = "127.0.0.1:8080"
    # A request whose batch the worker has not answered by then gets 504 (the batch stays
    # queued and is applied; retrying with the same Idempotency-Key gets its reply).
    timeout_s: float = Field(default=30.0, gt=0)
    # producer name -> "sha256:" + hex digest of its API key.  None: development mode
    # (no key needed; the gateway publishes as its own broker user).
    api_keys: dict[str, str] | None = None
    # Without api_keys the gateway listens on loopback only (anyone who reaches it could
    # write every database), unless anonymous access is allowed here explicitly.
    allow_anonymous: bool = False

    @field_validator("api_keys")
    @classmethod
    def _hashed(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return hashed_keys(value)

    @property
    def host_port(self) -> tuple[str, int]:
        return split_listen(self.listen)
