"""A worker's configuration in the tests and the benchmark: settings for a test, sections
merged over defaults, and the TOML file the real worker reads (the one TOML writer)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.support.services import amqp_url
from worker.settings import Settings

# The key every test's workers and commands share: required with producers lists, and
# the same in a worker and the command it runs in another process.
TEST_SIGNING_KEY = "test-signing-key"
# What a TOML basic string must escape: the quote, the backslash and the control characters.
_ESCAPES = {ord('"'): '\\"', ord("\\"): "\\\\",
            **{c: f"\\u{c:04X}" for c in [*range(0x20), 0x7F]}}
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _string(text: str) -> str:
    return '"' + text.translate(_ESCAPES) + '"'


def _key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else _string(name)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def to_toml(values: Mapping[str, Any], table: tuple[str, ...] = ()) -> str:
    """Nested tables of plain values (booleans, numbers, strings, lists of them) as TOML;
    None leaves the key out, as TOML has no null."""
    plain = {k: v for k, v in values.items() if not isinstance(v, Mapping) and v is not None}
    lines = [f"[{'.'.join(map(_key, table))}]"] if table and plain else []
    lines += [f"{_key(k)} = {_value(v)}" for k, v in plain.items()]
    text = "\n".join(lines) + ("\n\n" if lines else "")
    for key, inner in values.items():
        if isinstance(inner, Mapping):
            text += to_toml(inner, (*table, key))
    return text


def write_toml(path: Path, values: Mapping[str, Any]) -> Path:
    path.write_text(to_toml(values))
    return path


def merged(defaults: Mapping[str, Any], sections: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` with each of ``sections`` merged over the table of its name (a value
    that is not a table replaces the default)."""
    values = dict(defaults)
    for name, section in sections.items():
        values[name] = ({**values.get(name, {}), **section} if isinstance(section, Mapping)
                        else section)
    return values


def make_settings(vhost: str, databases: dict[str, dict[str, Any]], **overrides: Any) -> Settings:
    """Settings for a test: its vhost and databases, no metrics port, short retry delays,
    the tests' signing key."""
    defaults: dict[str, Any] = {
        "amqp": {"url": amqp_url(vhost), "publish_timeout_s": 10.0, "prefetch_count": 8,
                 "signing_key": TEST_SIGNING_KEY},
        "databases": databases,
        "metrics": {"port": 0},
        "retry": {"delays_s": [0.2, 0.4], "max_deliveries": 3},
        "worker": {"shutdown_grace_s": 10.0},
        "log": {"format": "json", "level": "warning"},
    }
    return Settings(**merged(defaults, overrides))


def write_settings(path: Path, settings: Settings) -> Path:
    """The settings as the TOML file the CLI reads (secrets written out in clear)."""

    def reveal(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: reveal(v) for k, v in value.items()}
        if hasattr(value, "get_secret_value"):
            return value.get_secret_value()
        return value

    return write_toml(path, reveal(settings.model_dump(mode="python")))
