"""What part of the worker's CPU per item is fixed by what it must do, measured in the
benchmark's own process: the floor a missed CPU target is read against."""

from __future__ import annotations

import time

from bench.data import PATH, Batches
from schemas.models import model_for
from schemas.registry import default_registry


def validation_us_per_item(batches: Batches, passes: int = 3) -> float:
    """pydantic's ``validate_json`` alone over ``batches`` (the worker's one call per body,
    the same TypeAdapter), in microseconds of CPU per item: the best of ``passes``, since
    other processes on a shared machine only ever add to it."""
    route = default_registry().route(PATH)
    assert route is not None
    validate = model_for(route.entity).batch.validate_json
    best = float("inf")
    for _ in range(passes):
        started = time.process_time()
        for body in batches.bodies:
            validate(body)
        best = min(best, time.process_time() - started)
    return best / batches.item_count * 1e6
