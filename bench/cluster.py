"""Scale-out on a three-node RabbitMQ cluster of the benchmark's own: one worker, then two,
on the quorum request queue, with the rate and the CPU each node spends per item.

    python -m bench.cluster [--seconds 20]      (about two minutes; prints a Markdown table)

The nodes are started and stopped by the fault tests' harness
(tests/support/faults/cluster.py) on ports of their own; the database is a fresh one on
the local PostgreSQL.  Each worker lists every node, starting with a different one, as a
deployment would spread them; the load generator publishes through the last node.
1,000-item Benefit batches, twice the workers' prefetch in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from bench.cpu import CpuMeter, cpu_seconds
from bench.data import Keys, make_batches
from bench.load import Loops, Producer
from bench.services import (
    Process,
    own_database,
    python_module,
    seed_database,
    wait_for_log,
    worker_config,
)
from tests.support.faults.cluster import RabbitCluster, rabbit_cluster
from worker.amqp.topology import REQUEST_QUEUE

SIZE = 1000
PREFETCH = 16


@dataclass
class Measured:
    workers: int
    items_per_s: float
    worker_us: float          # CPU per item, all workers
    postgres_us: float
    node_us: dict[str, float]  # CPU per item, by RabbitMQ node
    leader: str


@contextlib.asynccontextmanager
async def _workers(count: int, cluster: RabbitCluster, dsn: str,
                   workdir: Path) -> AsyncIterator[list[Process]]:
    urls = cluster.urls()
    started: list[Process] = []
    try:
        for n in range(count):
            rotated = urls[n:] + urls[:n]
            config = worker_config(workdir / f"worker{n}.toml", rotated[0], dsn,
                                   amqp={"url": rotated, "prefetch_count": PREFETCH})
            log = workdir / f"worker{n}.log"
            process = Process(python_module("worker", "run", "--config", str(config)), log)
            started.append(process)
            await wait_for_log(log, b'"consuming"', process)
        yield started
    finally:
        for process in started:
            process.stop()


async def measure(count: int, cluster: RabbitCluster, dsn: str, seconds: float,
                  keys: Keys) -> Measured:
    with tempfile.TemporaryDirectory() as workdir:
        async with _workers(count, cluster, dsn, Path(workdir)) as workers, \
                Producer(cluster.urls()[-1]) as producer:
            window = 2 * PREFETCH * count
            loops = Loops(producer.call)
            await loops.closed(make_batches(keys, SIZE, window).bodies, window, 60)
            work = make_batches(keys, SIZE, int(seconds * 150))
            meter = CpuMeter([w.pid for w in workers])
            beams = {node.name: node.beam_pid or 0 for node in cluster.nodes}
            nodes = {name: cpu_seconds(pid) for name, pid in beams.items()}
            meter.start()
            started = time.perf_counter()
            run = await loops.closed(work.bodies, window, seconds)
            items = run.batches * SIZE
            split = meter.stop(items)
            per_node = {name: (cpu_seconds(pid) - nodes[name]) / items * 1e6
                        for name, pid in beams.items()}
            rate = items / (time.perf_counter() - started)
            return Measured(count, rate, split.consumer, split.postgres, per_node,
                            cluster.leader(REQUEST_QUEUE).name)


def table(results: list[Measured]) -> str:
    names = list(results[0].node_us)
    lines = ["| workers | items/s | worker CPU us/item | PostgreSQL us/item | "
             + " | ".join(f"node {n.split('@')[0][-1]} us/item" for n in names)
             + " | queue leader |",
             "|---|---|---|---|" + "---|" * len(names) + "---|"]
    for r in results:
        lines.append(f"| {r.workers} | {r.items_per_s:,.0f} | {r.worker_us:.1f} | "
                     f"{r.postgres_us:.1f} | "
                     + " | ".join(f"{r.node_us[n]:.1f}" for n in names)
                     + f" | node {r.leader.split('@')[0][-1]} |")
    return "\n".join(lines)


async def main(seconds: float) -> None:
    keys = Keys()
    with rabbit_cluster(3) as cluster:
        async with own_database() as dsn:
            await seed_database(dsn)
            results = [await measure(n, cluster, dsn, seconds, keys) for n in (1, 2)]
    print(table(results))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.cluster")
    parser.add_argument("--seconds", type=float, default=20.0)
    asyncio.run(main(parser.parse_args().seconds))
