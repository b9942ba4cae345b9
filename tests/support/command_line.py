"""The console script as a person runs it, in a process of its own: its exit status and
what it printed."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.support.configs import write_toml
from tests.support.services import amqp_url


def write_config(path: Path, vhost: str, dsn: str) -> Path:
    return write_toml(path, {"amqp": {"url": amqp_url(vhost)},
                             "databases": {"demo": {"dsn": dsn}}, "metrics": {"port": 0}})


async def run_cli(*args: str, stdin: bytes | None = None,
                  env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``python -m worker ARGS``: exit status, stdout, stderr.  The environment is this
    one less its UPSERT_ settings, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("UPSERT_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", *args, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**base, **(env or {})})
    out, err = await asyncio.wait_for(process.communicate(stdin), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
