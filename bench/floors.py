"""What part of the worker's CPU per item is fixed by what it must do, measured in the
benchmark's own process: the floor a missed CPU target is read against."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.data import PATH, Batches
from schemas.models import model_for
from schemas.registry import default_registry
from worker.core.reading import read_items
from worker.settings import LimitsSettings


def reading_us_per_item(batches: Batches, passes: int = 3) -> tuple[float, float]:
    """Reading ``batches`` as the worker does (the fast reader, schemas/fast.py) and with
    pydantic's ``validate_json`` alone (what reads every body the fast reader refuses), in
    microseconds of CPU per item each: the best of ``passes``, since other processes on a
    shared machine only ever add to it."""
    route = default_registry().route(PATH)
    assert route is not None
    entity, model = route.entity, model_for(route.entity)
    max_items = LimitsSettings().max_items  # the worker's default, as it runs in the bench
    worker = _best(lambda body: read_items(entity, model, body, max_items), batches, passes)
    pydantic = _best(model.batch.validate_json, batches, passes)
    return worker, pydantic


def _best(read: Callable[[bytes], Any], batches: Batches, passes: int) -> float:
    best = float("inf")
    for _ in range(passes):
        started = time.process_time()
        for body in batches.bodies:
            read(body)
        best = min(best, time.process_time() - started)
    return best / batches.item_count * 1e6
