"""``[console]``: the operator console's settings (``upsert-worker console``,
docs/operations.md, "Operator console")."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from worker.settings.gateway import hashed_keys
from worker.settings.listen import Listen, split_listen
from worker.settings.sections import Section


class ConsoleSettings(Section):
    # host:port the console listens on; an IPv6 host in brackets ("[::1]:8081").
    listen: Listen = "127.0.0.1:8081"
    # Key of the signed session cookie.  Unset: a random key per process, so a restart
    # logs every operator out (set it when that matters, or with several replicas).
    session_key: SecretStr | None = None
    # operator name -> "sha256:" + hex digest of the operator's key.  None: no login, and
    # the console listens on loopback only (worker/http/exposure.py, the gateway's rule).
    operators: dict[str, str] | None = None
    # The workers' metrics endpoints (metrics.port): the console samples their /metrics
    # for the rates of the overview, and shows their /healthz and /readyz.
    workers: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:9464"])
    # How often the console samples the workers (and the overview refreshes).
    sample_interval_s: float = Field(default=5.0, gt=0)

    @field_validator("operators")
    @classmethod
    def _hashed(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return hashed_keys(value, "console key")

    @property
    def host_port(self) -> tuple[str, int]:
        return split_listen(self.listen)
