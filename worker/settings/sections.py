"""The configuration's sections but ``[gateway]`` (worker/settings/gateway.py): one model
each, a misspelt key refused.  The contract's section 7 describes every key."""

from __future__ import annotations

import secrets
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

# The signing key of this process when none is configured (AmqpSettings.signing_key_bytes).
_PROCESS_SIGNING_KEY = secrets.token_bytes(32)


class Section(BaseModel):
    # A misspelt key is refused: ignored, it would leave its setting at the default unseen.
    model_config = ConfigDict(extra="forbid")


class AmqpSettings(Section):
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


class DatabaseSettings(Section):
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
    group_connections: int = Field(default=1, ge=1)


class MetricsSettings(Section):
    host: str = "0.0.0.0"
    # 0 disables the HTTP endpoint (handy in tests that run many workers).
    port: int = Field(default=9464, ge=0, le=65535)


class LimitsSettings(Section):
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1)
    # Decompressed size of a gzip body; inflation stops at this bound (no gzip bombs).
    max_decompressed_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    max_items: int = Field(default=10_000, ge=1)
    # Body bytes validated and written at once (worker/core/budget.py); one body alone always
    # goes.  Bounds memory with large batches: room for two of the largest bodies keeps
    # one validating while the other is written; more only costs memory (BENCHMARKS.md).
    max_bytes_in_progress: int = Field(default=8 * 1024 * 1024, ge=1)


class RetrySettings(Section):
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


class WorkerSettings(Section):
    # SIGTERM: in-flight batches get this long to finish before they are handed back.
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    # Processed message ids (for exactly-once redelivery) are kept this long.
    processed_retention_days: float = Field(default=7.0, gt=0)
    processed_cleanup_interval_s: float = Field(default=3600.0, gt=0)
    # A batch whose timestamp is further ahead of the worker's clock than this is refused
    # (400): its rows would win over every later write, each answered 409.
    max_clock_skew_s: float = Field(default=300.0, ge=0)


class LogSettings(Section):
    # auto: console rendering on a terminal, JSON lines otherwise.
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"
    # "batch answered" lines a second, at most, for clean batches (first attempt, every
    # item 200 or 201, nothing replayed, dead-lettered or dry): above it they are counted
    # (the next line's "unlogged", upsert_batch_lines_unlogged_total), not logged.  Every
    # other batch always gets its line.  0: a line for every batch.
    clean_batch_lines_per_s: float = Field(default=100, ge=0)
