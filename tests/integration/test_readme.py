"""The README's configuration block is the real one: it loads, and it names every setting."""

from __future__ import annotations

import asyncio
import re
import sys
import tomllib
from typing import Any

from pydantic import BaseModel

from tests.support.paths import README
from tests.support.services import amqp_url
from worker.service import Worker
from worker.settings import Settings


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


async def test_readme_python_producer_runs(vhost: str, worker: Worker) -> None:
    """The README's ten-line producer, run as written (against this test's broker)."""
    text = README.read_text()
    section = text[text.index("### From Python: the client library"):]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None
    code = block.group(1).replace("amqp://guest:guest@127.0.0.1:5672/%2F", amqp_url(vhost))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    assert out.decode().startswith("201 [{'key': 'armorCodeExCode_Key', 'value': 1}] Created")
