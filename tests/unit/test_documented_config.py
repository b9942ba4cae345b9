"""The configuration block of docs/configuration.md is the real one: it loads, and it names
every setting.  (The documented Python producer runs in tests/integration/test_readme.py.)"""

from __future__ import annotations

import re
import tomllib
from typing import Any

from pydantic import BaseModel

from tests.support.paths import DOCS
from worker.settings import Settings


def documented_config() -> dict[str, Any]:
    text = (DOCS / "configuration.md").read_text()
    section = text[text.index("## Every setting"):]
    block = re.search(r"```toml\n(.*?)```", section, re.S)
    assert block is not None
    # Optional settings are shown commented out: uncomment them to check them too.
    toml = re.sub(r"^# (\w+ = )", r"\1", block.group(1), flags=re.M)
    return tomllib.loads(toml)


def test_documented_configuration_loads_and_names_every_setting() -> None:
    config = documented_config()
    settings = Settings(**config)
    assert settings.databases["demo"].producers == ["acme-loader"]
    for section in Settings.model_fields:
        value = getattr(settings, section)
        sample = value["demo"] if isinstance(value, dict) else value
        assert isinstance(sample, BaseModel)
        documented = config[section]["demo"] if section == "databases" else config[section]
        assert set(type(sample).model_fields) == set(documented), section
