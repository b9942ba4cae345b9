"""A worker with a byte budget (worker/core/budget.py) too small for any body still answers
every batch; the budget itself is tests/unit/test_budget.py."""

from __future__ import annotations

from tests.support import samples
from tests.support.configs import make_settings
from tests.support.producer import Producer
from tests.support.running import running


async def test_a_worker_with_a_tiny_budget_still_answers_every_batch(
        vhost: str, dsn: str, producer: Producer) -> None:
    """Every body is over a 1-byte budget: the batches go one at a time, all answered."""
    settings = make_settings(vhost, {"demo": {"dsn": dsn}},
                             limits={"max_bytes_in_progress": 1})
    async with running(settings):
        sent = [await producer.send(samples.BENEFIT_PATH,
                                    [samples.benefit(f"B{n}-{i}") for i in range(50)])
                for n in range(6)]
        replies = [await producer.reply(c, timeout_s=20) for c in sent]
    assert all(r.status == 207 for r in replies)
    assert all(d["status"] == 201 for r in replies for d in r.body["data"])
