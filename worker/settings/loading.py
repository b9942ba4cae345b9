"""The whole configuration, :class:`Settings`, and how it is loaded: environment over the
TOML file over the built-in defaults; errors that name keys, never values."""

from __future__ import annotations

import contextvars
import os
import re
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from worker.core.errors import OperatorError
from worker.settings import sections
from worker.settings.console import ConsoleSettings
from worker.settings.gateway import GatewaySettings

CONFIG_ENV = "UPSERT_CONFIG"
# The metrics label of batches for a database that is not configured (worker/metrics.py):
# no database may be configured under this name, so its series never mixes with one.
UNCONFIGURED_DATABASE = "unknown"


class ConfigurationError(OperatorError, ValueError):
    """The configuration cannot be used; the message names the keys, never their values."""


def _default_databases() -> dict[str, sections.DatabaseSettings]:
    return {"demo": sections.DatabaseSettings(dsn=SecretStr("postgresql://127.0.0.1:5432/vbapi_demo"))}


class Settings(BaseSettings):
    """Everything the worker and its commands are configured with.  Only the command line
    and the worker's start (worker/service.py) handle it whole: every other part is given
    the sections it uses."""

    model_config = SettingsConfigDict(
        env_prefix="UPSERT_", env_nested_delimiter="__", extra="forbid",
    )

    amqp: sections.AmqpSettings = Field(default_factory=sections.AmqpSettings)
    databases: dict[str, sections.DatabaseSettings] = Field(default_factory=_default_databases)
    metrics: sections.MetricsSettings = Field(default_factory=sections.MetricsSettings)
    limits: sections.LimitsSettings = Field(default_factory=sections.LimitsSettings)
    retry: sections.RetrySettings = Field(default_factory=sections.RetrySettings)
    worker: sections.WorkerSettings = Field(default_factory=sections.WorkerSettings)
    log: sections.LogSettings = Field(default_factory=sections.LogSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)

    @field_validator("databases")
    @classmethod
    def _not_the_unconfigured_label(cls, value: dict[str, sections.DatabaseSettings]
                                    ) -> dict[str, sections.DatabaseSettings]:
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
