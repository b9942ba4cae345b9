"""The overview's rates and the workers' health.

The console samples each worker's ``/metrics`` (``[console] workers``) every
``sample_interval_s`` and keeps the last :data:`WINDOW_S` seconds of samples.  A rate is
the growth of a counter between the oldest and the newest sample of that window, summed
over the workers, divided by the time between them; a counter that went down (the worker
restarted) counts from zero.  Nothing is stored: a console started a minute ago shows the
rates of that minute.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from prometheus_client.parser import text_string_to_metric_families

WINDOW_S = 60.0
FETCH_TIMEOUT_S = 2.0
# (metric sample name, label that is not the database) -> what the overview calls it
SERIES = {"upsert_items_total": "status", "upsert_batches_total": "outcome"}

Key = tuple[str, str, str]  # (sample name, database, status or outcome)


def shown_url(url: str) -> str:
    """A worker's URL without user information (a password never shows on a page)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    netloc += f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def fetch(url: str) -> tuple[int | None, str]:
    """(HTTP status, body) of a GET, or (None, the reason)."""
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, ValueError) as e:
        return None, str(getattr(e, "reason", e))


def counters(text: str) -> dict[Key, float]:
    """The items and batches counters of one /metrics text, summed over entities."""
    values: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            other = SERIES.get(sample.name)
            if other is None:
                continue
            key = (sample.name, sample.labels.get("database", ""), sample.labels.get(other, ""))
            values[key] = values.get(key, 0.0) + sample.value
    return values


@dataclass
class Health:
    worker: str
    healthz: str
    readyz: str
    ok: bool


@dataclass
class Sampler:
    """The last minute of each worker's counters, and their last health."""

    workers: list[str]
    window_s: float = WINDOW_S
    samples: dict[str, deque[tuple[float, dict[Key, float]]]] = field(default_factory=dict)
    health: list[Health] = field(default_factory=list)

    async def sample(self) -> None:
        now = time.monotonic()
        results = await asyncio.gather(*(asyncio.to_thread(self._probe, w)
                                         for w in self.workers))
        self.health = [health for health, _ in results]
        for worker, (_, values) in zip(self.workers, results, strict=True):
            held = self.samples.setdefault(worker, deque())
            if values is not None:
                held.append((now, values))
            while held and now - held[0][0] > self.window_s:
                held.popleft()

    @staticmethod
    def _probe(worker: str) -> tuple[Health, dict[Key, float] | None]:
        base = worker.rstrip("/")
        live_status, live = fetch(base + "/healthz")
        ready_status, ready = fetch(base + "/readyz")
        metrics_status, text = fetch(base + "/metrics")
        health = Health(shown_url(worker), _said(live_status, live),
                        _said(ready_status, ready), ready_status == 200)
        try:
            values = counters(text) if metrics_status == 200 else None
        except ValueError:
            values = None
        return health, values

    def rates(self) -> dict[Key, float]:
        """Per second over the window, summed over the workers."""
        total: dict[Key, float] = {}
        for held in self.samples.values():
            if len(held) < 2:
                continue
            (t0, first), (t1, last) = held[0], held[-1]
            for key, value in last.items():
                before = first.get(key, 0.0)
                grown = value - before if value >= before else value
                total[key] = total.get(key, 0.0) + grown / (t1 - t0)
        return total


def _said(status: int | None, body: str) -> str:
    text = body.strip().splitlines()[0] if body.strip() else ""
    return f"{status} {text}"[:200] if status is not None else f"unreachable: {text}"[:200]
