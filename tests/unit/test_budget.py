"""The byte budget that bounds the memory of batches in progress (worker/core/budget.py);
a worker with a tiny one is tests/integration/test_budget.py."""

from __future__ import annotations

import asyncio

from worker.core.budget import ByteBudget


async def _started(budget: ByteBudget, size: int, log: list[int],
                   release: asyncio.Event) -> None:
    async with budget.hold(size):
        log.append(size)
        await release.wait()


async def test_bodies_wait_their_turn_first_come_first_served() -> None:
    budget = ByteBudget(10)
    log: list[int] = []
    gates = [asyncio.Event() for _ in range(4)]
    tasks = [asyncio.create_task(_started(budget, size, log, gate))
             for size, gate in zip((6, 4, 8, 1), gates, strict=True)]
    await asyncio.sleep(0.01)
    # 6 + 4 fill the budget; 8 waits, and 1 (which would fit once 4 is done) waits behind it.
    assert log == [6, 4] and budget.used == 10
    gates[1].set()
    await asyncio.sleep(0.01)
    assert log == [6, 4] and budget.used == 6  # 8 does not fit beside 6; 1 stays behind it
    gates[0].set()
    await asyncio.sleep(0.01)
    assert log == [6, 4, 8, 1] and budget.used == 9
    gates[2].set()
    gates[3].set()
    await asyncio.gather(*tasks)
    assert budget.used == 0


async def test_a_body_over_the_budget_goes_alone_and_a_cancelled_wait_gives_way() -> None:
    budget = ByteBudget(10)
    log: list[int] = []
    first, big_gate, small_gate = asyncio.Event(), asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(_started(budget, 3, log, first))
    await asyncio.sleep(0.01)
    big = asyncio.create_task(_started(budget, 50, log, big_gate))
    small = asyncio.create_task(_started(budget, 2, log, small_gate))
    await asyncio.sleep(0.01)
    assert log == [3]  # 50 waits for the budget to be empty; 2 waits behind it
    big.cancel()
    await asyncio.sleep(0.01)
    assert log == [3, 2] and budget.used == 5
    first.set()
    small_gate.set()
    await asyncio.gather(holder, small)
    alone = asyncio.create_task(_started(budget, 50, log, big_gate))
    await asyncio.sleep(0.01)
    assert log[-1] == 50 and budget.used == 50
    big_gate.set()
    await alone
    assert budget.used == 0
