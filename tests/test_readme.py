"""The README's configuration block is the real one: it loads, and it names every setting."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from worker.settings import Settings

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_config() -> dict[str, Any]:
    text = README.read_text()
    section = text[text.index("## Configuration"):]
    block = re.search(r"```toml\n(.*?)```", section, re.S)
    assert block is not None
    # Optional settings are shown commented out: uncomment them to check them too.
    toml = re.sub(r"^# (\w+ = )", r"\1", block.group(1), flags=re.M)
    return tomllib.loads(toml)


def test_readme_configuration_loads_and_names_every_setting() -> None:
    config = readme_config()
    settings = Settings(**config)
    assert settings.databases["demo"].producers == ["acme-loader"]
    for section in Settings.model_fields:
        value = getattr(settings, section)
        sample = value["demo"] if isinstance(value, dict) else value
        assert isinstance(sample, BaseModel)
        documented = config[section]["demo"] if section == "databases" else config[section]
        assert set(type(sample).model_fields) == set(documented), section
