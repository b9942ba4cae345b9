"""Where each item's CPU time goes: the consumer, PostgreSQL, RabbitMQ and this benchmark
process (the load generator, or the ceiling's own client), read from /proc around a loop.

On a machine where all of them share a few cores the rate is bound by their sum, not by
any one of them, so this is what explains a ratio between two contenders.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
POSTGRES = "postgres"
RABBITMQ = "beam.smp"


@dataclass
class CpuSplit:
    """Microseconds of CPU per item, by process group, and the cores busy meanwhile."""

    consumer: float
    postgres: float
    rabbitmq: float
    load: float
    cores_busy: float

    @property
    def total(self) -> float:
        return self.consumer + self.postgres + self.rabbitmq + self.load


def cpu_times(pid: int) -> tuple[float, float]:
    """utime and stime of a process (in user space, in the kernel), in seconds (0 and 0 if
    it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    return int(fields[11]) / _TICKS, int(fields[12]) / _TICKS


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (0 if it is gone)."""
    return sum(cpu_times(pid))


def _pids_named(name: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() == name:
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


class CpuMeter:
    """``start()`` before a loop, ``stop(items)`` after it.  Servers' processes are found
    by name at both ends, so connections opened during the loop are counted too."""

    def __init__(self, consumer_pids: list[int] | None = None) -> None:
        self.consumer_pids = consumer_pids or []
        self._start: dict[str, dict[int, float]] = {}
        self._started_at = 0.0

    def _read(self) -> dict[str, dict[int, float]]:
        groups = {"consumer": self.consumer_pids, "postgres": _pids_named(POSTGRES),
                  "rabbitmq": _pids_named(RABBITMQ), "load": [os.getpid()]}
        return {group: {pid: cpu_seconds(pid) for pid in pids} for group, pids in groups.items()}

    def start(self) -> None:
        self._start = self._read()
        self._started_at = time.perf_counter()

    def stop(self, items: int) -> CpuSplit:
        wall = time.perf_counter() - self._started_at
        end = self._read()
        used = {group: sum(t - self._start[group].get(pid, 0.0) for pid, t in times.items())
                for group, times in end.items()}
        per_item = {group: s / max(items, 1) * 1e6 for group, s in used.items()}
        return CpuSplit(consumer=per_item["consumer"], postgres=per_item["postgres"],
                        rabbitmq=per_item["rabbitmq"], load=per_item["load"],
                        cores_busy=sum(used.values()) / wall if wall > 0 else 0.0)
