"""The documentation's code is the real one: the Python producer of docs/producers.md runs
as written.  (Its configuration block is checked in tests/unit/test_documented_config.py.)"""

from __future__ import annotations

import asyncio
import re
import sys

from tests.support.paths import DOCS
from tests.support.services import amqp_url
from worker.service import Worker


async def test_documented_python_producer_runs(vhost: str, worker: Worker) -> None:
    """The ten-line producer of docs/producers.md, run as written (against this test's
    broker)."""
    text = (DOCS / "producers.md").read_text()
    section = text[text.index("## From Python: the client library"):]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None
    code = block.group(1).replace("amqp://guest:guest@127.0.0.1:5672/%2F", amqp_url(vhost))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    assert out.decode().startswith("201 [{'key': 'armorCodeExCode_Key', 'value': 1}] Created")
