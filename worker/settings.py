"""Settings: the TOML file of the contract plus ``UPSERT_...`` environment overrides.

Parsed once into one :class:`Settings`.  Precedence, highest first: environment variables
(``UPSERT_AMQP__URL``, ``UPSERT_LIMITS__MAX_ITEMS``, ``UPSERT_DATABASES__DEMO__DSN`` ...),
the TOML file (``--config FILE``, else ``UPSERT_CONFIG``), built-in defaults that serve a
local broker and a local database.
"""

from __future__ import annotations

import contextvars
import os
import re
import secrets
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_ENV = "UPSERT_CONFIG"
# The metrics label of batches for a database that is not configured (worker/metrics.py):
# no database may be configured under this name, so its series never mixes with one.
UNCONFIGURED_DATABASE = "unknown"
# The signing key of this process when none is configured (AmqpSettings.signing_key_bytes).
_PROCESS_SIGNING_KEY = secrets.token_bytes(32)


class ConfigurationError(ValueError):
    """The configuration cannot be used; the message names the keys, never their values."""


class _Section(BaseModel):
    # A misspelt key is refused: ignored, it would leave its setting at the default unseen.
    model_config = ConfigDict(extra="forbid")


class AmqpSettings(_Section):
    # One node's URL, or the URLs of a cluster's nodes: connections go to the first that
    # answers and fail over to the others (worker/amqp/nodes.py).
    url: SecretStr | list[SecretStr] = SecretStr("amqp://guest:guest@127.0.0.1:5672/%2F")
    # Batches in flight per worker process: each holds at most one database connection.
    prefetch_count: int = Field(default=16, ge=1, le=10_000)
    # A publish (reply, retry, dead letter) not confirmed by then is treated as transient.
    publish_timeout_s: float = Field(default=10.0, gt=0)
    # How long the worker waits to reconnect before reporting the broker down.
    connect_timeout_s: float = Field(default=10.0, gt=0)
    # Pause between reconnection attempts after the broker dropped the connection
    # (aio-pika's own default is 5 s, a long gap in consuming for a short blip).
    reconnect_interval_s: float = Field(default=1.0, gt=0)
    # Key of the HMAC that carries a producer's name and the first receipt time on
    # republished batches (retries, dead letters, replays); every worker of a deployment
    # must share it.
    # Required once a database lists producers (Settings._signing_key_set); see
    # signing_key_bytes for what an unset key means.
    signing_key: SecretStr | None = None
    # RabbitMQ's management API (optional), for the unacknowledged counts `status` cannot
    # get over AMQP, e.g. "http://user:pass@rabbit:15672".  Unset: the AMQP host, port
    # 15672, the AMQP credentials; when it does not answer they are reported as unknown.
    management_url: SecretStr | None = None

    @field_validator("url")
    @classmethod
    def _some_url(cls, value: SecretStr | list[SecretStr]) -> SecretStr | list[SecretStr]:
        if isinstance(value, list) and not value:
            raise ValueError("at least one broker URL is needed")
        return value

    @property
    def urls(self) -> list[str]:
        """The nodes' URLs, in the order connections try them."""
        values = self.url if isinstance(self.url, list) else [self.url]
        return [value.get_secret_value() for value in values]

    def signing_key_bytes(self) -> bytes:
        if self.signing_key is not None:
            return self.signing_key.get_secret_value().encode()
        # Unset (allowed only while no database lists producers): a random key of this
        # process.  Derived from the broker URL it would expose the password to offline
        # guessing and change with it; a fixed one would let any producer forge a name.
        # A name and first receipt time carried by a retry that another process handles,
        # or by a replay, then fail to verify: the batch goes on without the name, and is
        # ordered by the time it comes back (the worker warns at start).
        return _PROCESS_SIGNING_KEY


class DatabaseSettings(_Section):
    dsn: SecretStr
    # Broker user names allowed to write this database; None lets any producer write.
    producers: list[str] | None = None
    pool_min_size: int = Field(default=1, ge=0)
    pool_max_size: int = Field(default=8, ge=1)
    # Per-statement timeout, so a stuck database surfaces as a transient failure.
    command_timeout_s: float = Field(default=60.0, gt=0)
    # Small batches that arrive while every connection is busy are committed together, at
    # most this many in one transaction, each with its own answers, reply and record
    # (worker/store/grouping.py); 1 writes every batch in a transaction of its own.
    group_max_batches: int = Field(default=32, ge=1)
    # Small batches (up to 100 rows) are written by at most this many transactions at a
    # time; the others wait for a turn and go in groups.  Larger batches use the whole pool.
    group_connections: int = Field(default=2, ge=1)


def _default_databases() -> dict[str, DatabaseSettings]:
    return {"demo": DatabaseSettings(dsn=SecretStr("postgresql://127.0.0.1:5432/vbapi_demo"))}


class MetricsSettings(_Section):
    host: str = "0.0.0.0"
    # 0 disables the HTTP endpoint (handy in tests that run many workers).
    port: int = Field(default=9464, ge=0, le=65535)


class LimitsSettings(_Section):
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1)
    # Decompressed size of a gzip body; inflation stops at this bound (no gzip bombs).
    max_decompressed_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    max_items: int = Field(default=10_000, ge=1)
    # Body bytes validated and written at once (worker/core/budget.py); one body alone always
    # goes.  Bounds memory with large batches: room for two of the largest bodies keeps
    # one validating while the other is written; more only costs memory (BENCHMARKS.md).
    max_bytes_in_progress: int = Field(default=8 * 1024 * 1024, ge=1)


class RetrySettings(_Section):
    # One delay queue per entry; a batch that still fails after the last one is dead-lettered.
    delays_s: list[float] = Field(default_factory=lambda: [1.0, 5.0, 30.0, 120.0])
    # Deliveries of one message before it is treated as poison (it crashed the worker).
    max_deliveries: int = Field(default=5, ge=1)

    @field_validator("delays_s")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if any(d <= 0 for d in value):
            raise ValueError("retry delays must be positive")
        return value


class WorkerSettings(_Section):
    # SIGTERM: in-flight batches get this long to finish before they are handed back.
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    # Processed message ids (for exactly-once redelivery) are kept this long.
    processed_retention_days: float = Field(default=7.0, gt=0)
    processed_cleanup_interval_s: float = Field(default=3600.0, gt=0)
    # A batch whose timestamp is further ahead of the worker's clock than this is refused
    # (400): its rows would win over every later write, each answered 409.
    max_clock_skew_s: float = Field(default=300.0, ge=0)


class LogSettings(_Section):
    # auto: console rendering on a terminal, JSON lines otherwise.
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class GatewaySettings(_Section):
    # host:port the HTTP gateway (`upsert-worker gateway`) listens on; an IPv6 host in
    # brackets ("[::1]:8080").
    listen: str = "127.0.0.1:8080"
    # A request whose batch the worker has not answered by then gets 504 (the batch stays
    # queued and is applied; retrying with the same Idempotency-Key gets its reply).
    timeout_s: float = Field(default=30.0, gt=0)
    # producer name -> "sha256:" + hex digest of its API key.  None: development mode
    # (no key needed; the gateway publishes as its own broker user).
    api_keys: dict[str, str] | None = None
    # Without api_keys the gateway listens on loopback only (anyone who reaches it could
    # write every database), unless anonymous access is allowed here explicitly.
    allow_anonymous: bool = False

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        cls.split_listen(value)  # said when the configuration loads, not at the bind
        return value

    @field_validator("api_keys")
    @classmethod
    def _hashed(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name, digest in (value or {}).items():
            if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
                raise ValueError(f"api key of {name!r} must be 'sha256:' and 64 lower-case "
                                 f"hex digits (the digest of the key, never the key itself)")
        return value

    @staticmethod
    def split_listen(listen: str) -> tuple[str, int]:
        """(host, port) of a listen value; an empty host is 127.0.0.1."""
        host, colon, port = listen.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        elif ":" in host:  # "::1:8080" could be either: IPv6 needs its brackets
            colon = ""
        if not colon or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"listen must be host:port (127.0.0.1:8080, [::1]:8080), "
                             f"not {listen!r}")
        return host or "127.0.0.1", int(port)

    @property
    def host_port(self) -> tuple[str, int]:
        return self.split_listen(self.listen)


class Settings(BaseSettings):
    """Everything the worker and its commands are configured with."""

    model_config = SettingsConfigDict(
        env_prefix="UPSERT_", env_nested_delimiter="__", extra="forbid",
    )

    amqp: AmqpSettings = Field(default_factory=AmqpSettings)
    databases: dict[str, DatabaseSettings] = Field(default_factory=_default_databases)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)

    @field_validator("databases")
    @classmethod
    def _not_the_unconfigured_label(cls, value: dict[str, DatabaseSettings]
                                    ) -> dict[str, DatabaseSettings]:
        if UNCONFIGURED_DATABASE in value:
            raise ValueError(f"no database may be named {UNCONFIGURED_DATABASE!r}: the "
                             f"metrics count batches for unconfigured databases under it")
        return value

    @model_validator(mode="after")
    def _signing_key_set(self) -> Settings:
        # A producers list is an access rule, and the signed name on a republished batch is
        # what it is checked against: the key must be shared by every worker and `dlq`
        # command, and derived from nothing (a per-process key would lock producers out of
        # their retried batches).
        guarded = [name for name, db in self.databases.items() if db.producers is not None]
        if guarded and self.amqp.signing_key is None:
            raise ValueError(f"amqp.signing_key must be set: database {guarded[0]!r} lists "
                             f"producers, whose names retries and replays carry signed")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_path_var.get()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


# The file to read is chosen per load_settings() call; a ContextVar keeps that out of the
# class while pydantic-settings asks the class for its sources.
_config_path_var: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "upsert_config_path", default=None
)


def load_settings(config: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from ``config`` (else ``$UPSERT_CONFIG``, else defaults) and the environment."""
    chosen = config if config is not None else os.environ.get(CONFIG_ENV) or None
    path = Path(chosen) if chosen is not None else None
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"configuration file not found: {path}")
    token = _config_path_var.set(path)
    try:
        return Settings(**overrides)
    except ValidationError as e:
        raise ConfigurationError(describe(e)) from None
    finally:
        _config_path_var.reset(token)


def describe(error: ValidationError) -> str:
    """Each problem as ``key: what is wrong``, without the value given: pydantic's own
    message quotes it, and next to a bad value may sit a URL with its password."""
    problems = []
    for problem in error.errors(include_url=False, include_input=False,
                                include_context=False):
        key = ".".join(str(part) for part in problem["loc"] if _is_key(part))
        message = ("unknown key" if problem["type"] == "extra_forbidden"
                   else problem["msg"].removeprefix("Value error, "))
        problems.append(f"{key}: {message}" if key else message)
    return "; ".join(problems)


def _is_key(part: str | int) -> bool:
    # A union's branches show in the location as their types ("str", "list[str]", ...).
    if isinstance(part, int):
        return True
    return not re.search(r"[\[\]()]", part) and part not in ("str", "int", "float", "bool")
