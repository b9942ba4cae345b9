"""What a worker process's log (JSON lines) says, for the figures of a failover: when it
consumed again and from which node, how often it failed over, which batches it answered
from the record, and when it received them."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

CONSUMING = "consuming"
FAILING_OVER = "broker connection lost; failing over"
ANSWERED = "batch answered"
RENEWED = "the broker refused a publish; publishing on a new channel"
CUT_OFF = "delivery cut off before its outcome; the broker redelivers it"
HANDED_BACK = "could not complete delivery; handing it back"


@dataclass(frozen=True)
class LogLine:
    at: float  # seconds since the epoch
    event: str
    fields: dict[str, Any]

    @property
    def received_at(self) -> float:
        """For a "batch answered" line: when the worker received that delivery (the line
        is written at its ack, ``duration_ms`` after)."""
        return self.at - float(self.fields.get("duration_ms", 0)) / 1000


def read_log(path: Path) -> list[LogLine]:
    """Every JSON line of the log, in order (anything else, a traceback say, skipped)."""
    lines = []
    for raw in path.read_bytes().splitlines():
        try:
            fields = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(fields, dict) and "timestamp" in fields:
            at = dt.datetime.fromisoformat(fields["timestamp"].replace("Z", "+00:00"))
            lines.append(LogLine(at.timestamp(), str(fields.get("event")), fields))
    return lines


def events(path: Path, event: str, after: float = 0.0) -> list[LogLine]:
    """The lines of that event logged after ``after`` (seconds since the epoch)."""
    return [line for line in read_log(path) if line.event == event and line.at > after]


async def wait_event(path: Path, event: str, after: float, timeout_s: float) -> LogLine:
    """The first line of that event logged after ``after``, once there is one."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not (found := events(path, event, after)):
        if loop.time() > deadline:
            raise AssertionError(f"no {event!r} in the worker's log within {timeout_s} s")
        await asyncio.sleep(0.1)
    return found[0]


def first_received(path: Path, after: float) -> LogLine | None:
    """The answered batch the worker received first after ``after``."""
    later = [line for line in events(path, ANSWERED) if line.received_at > after]
    return min(later, key=lambda line: line.received_at, default=None)


def replayed(path: Path) -> int:
    """Deliveries answered from the record (a batch redelivered after it was committed)."""
    return sum(bool(line.fields.get("replayed")) for line in events(path, ANSWERED))


def seconds(at: float | None, since: float) -> float | None:
    """``at - since``, rounded for a figure; None stays None (it never happened)."""
    return None if at is None else round(at - since, 2)
