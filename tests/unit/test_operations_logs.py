"""Log format: JSON lines by default, readable console output when stderr is a terminal."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

import orjson

SCRIPT = ("from worker.logs import configure_logging, get_logger;"
          "from worker.settings import LogSettings;"
          "configure_logging(LogSettings());"
          "get_logger('worker.test').info('batch answered', database='demo', items=2)")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("UPSERT_")}


def test_json_lines_when_not_a_terminal() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, timeout=30,
                          env=_env(), check=True)
    [line] = done.stderr.splitlines()
    record = orjson.loads(line)
    assert record["event"] == "batch answered" and record["level"] == "info"
    assert record["database"] == "demo" and record["items"] == 2 and "timestamp" in record


def test_console_output_on_a_terminal() -> None:
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen([sys.executable, "-c", SCRIPT], stderr=terminal,
                                   stdout=subprocess.DEVNULL, env=_env())
        os.close(terminal)
        assert process.wait(timeout=30) == 0
        output = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal's other end closed: all read
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(controller)
    text = output.decode()
    assert "batch answered" in text and "database" in text and "demo" in text
    assert not text.lstrip().startswith("{")  # not JSON
