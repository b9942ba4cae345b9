"""Settings: the TOML file of the contract plus ``UPSERT_...`` environment overrides.

Parsed once into one :class:`Settings`.  Precedence, highest first: environment variables
(``UPSERT_AMQP__URL``, ``UPSERT_LIMITS__MAX_ITEMS``, ``UPSERT_DATABASES__DEMO__DSN`` ...),
the TOML file (``--config FILE``, else ``UPSERT_CONFIG``), built-in defaults that serve a
local broker and a local database.

    sections.py   one model per section ([amqp], [databases.<name>], [limits] ...)
    gateway.py    [gateway]
    console.py    [console]
    listen.py     a host:port setting, checked when the configuration loads
    loading.py    Settings (every section) and load_settings

The worker's parts take the sections they use (``LimitsSettings``, ``AmqpSettings`` ...);
only the command line and the worker's start handle the whole :class:`Settings`.
"""

from worker.settings.console import ConsoleSettings
from worker.settings.gateway import GatewaySettings
from worker.settings.listen import Listen, split_listen
from worker.settings.loading import (
    CONFIG_ENV,
    UNCONFIGURED_DATABASE,
    ConfigurationError,
    Settings,
    describe,
    load_settings,
)
from worker.settings.sections import (
    AmqpSettings,
    DatabaseSettings,
    LimitsSettings,
    LogSettings,
    MetricsSettings,
    RetrySettings,
    Section,
    WorkerSettings,
)

__all__ = [
    "CONFIG_ENV", "UNCONFIGURED_DATABASE", "AmqpSettings", "ConfigurationError", "ConsoleSettings",
    "DatabaseSettings", "GatewaySettings", "LimitsSettings", "Listen", "LogSettings",
    "MetricsSettings", "RetrySettings", "Section", "Settings", "WorkerSettings", "describe",
    "load_settings", "split_listen",
]
