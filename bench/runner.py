"""One benchmark run: the ceilings, the bare broker, the naive peer, the worker (one and two
processes), each in its own vhost and database, then the table and the verdicts."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import os
import platform
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from bench import ceiling
from bench.cpu import CpuMeter
from bench.data import WIDEST, Batches, Keys, WideItems, make_batches
from bench.floors import reading_us_per_item
from bench.http_load import HttpProducer
from bench.load import Loops, Producer, Run, percentile
from bench.plan import Plan
from bench.report import Results, Row, Target
from bench.services import (
    Process,
    amqp_url,
    own_database,
    own_services,
    own_vhost,
    python_module,
    seed_database,
    wait_for_log,
    worker_config,
)
from bench.startup import IDLE_S, measure_startup
from tests.support.services import free_port
from worker.settings import Settings

WORKER = "worker"
WORKER_BAD = "worker, 1% bad"
WORKER_UPDATES = "worker, every item an update"
TWO_WORKERS = "2 workers"
WIDEST_ROW = f"worker, widest entity ({WIDEST}, 655 fields)"
GATEWAY = "worker via HTTP gateway"
NAIVE = "naive peer"
CEILING = "raw ceiling (COPY + INSERT..SELECT)"
COMMIT = "commit ceiling (1-row tx)"
BROKER = "bare broker round trip"
BROKER_AIORMQ = "bare round trip, aiormq"

# The settings and batch sizes of python -m bench --sweep, and how long each loop runs.
SWEEP_PREFETCH = (8, 16, 32, 64)
SWEEP_POOL = (2, 4, 8)
SWEEP_SIZES = (1, 100, 1000)
SWEEP_MAX_S = 4.0


def head_commit() -> str:
    """The short hash of the checkout's HEAD ("?" outside a git checkout)."""
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=False).stdout.strip() or "?"


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _batches_for(plan: Plan, size: int, window: int) -> int:
    return max(window, min(plan.max_batches, plan.item_budget // size))


def _ms(seconds: float) -> float:
    return seconds * 1000


def _mb(kib: int) -> float:
    return kib / 1024


@dataclass(frozen=True)
class Contender:
    """A consumer under load: the producer that sends it batches and waits for the replies,
    the processes whose CPU and peak memory are its, how many batches are kept in flight,
    and how they are made (``make(size, count)``)."""

    producer: Producer | HttpProducer
    processes: tuple[Process, ...]
    window: int
    make: Callable[[int, int], Batches]


def _row(name: str, size: int, closed: Run, opened: Run | None,
         peak_kib: int | None = None) -> Row:
    return Row(name=name, size=size, items_per_s=closed.per_s(closed.batches * size),
               batches_per_s=closed.per_s(closed.batches),
               p50_ms=_ms(percentile(opened.latencies_s, 0.5)) if opened else None,
               p99_ms=_ms(percentile(opened.latencies_s, 0.99)) if opened else None,
               peak_mb=_mb(peak_kib) if peak_kib else None, cpu=closed.cpu)


class Bench:
    def __init__(self, plan: Plan, say: Callable[[str], None]) -> None:
        self.plan = plan
        self.say = say
        self.keys = Keys()
        self.defaults = Settings(_env_file=None)  # type: ignore[call-arg]
        amqp, db = self.defaults.amqp, self.defaults.databases["demo"]
        self.prefetch = amqp.prefetch_count
        # The worker holds at most one connection per batch in flight.
        self.db_concurrency = min(amqp.prefetch_count, db.pool_max_size)
        self.window = 2 * self.prefetch
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-"))
        self.results = Results(context=self._context())

    def _context(self) -> dict[str, str]:
        return {
            "date": now_utc(),
            "commit": head_commit(),
            "cpus": str(os.cpu_count()),
            "python": platform.python_version(),
            "worker defaults": f"prefetch {self.prefetch}, pool {self.db_concurrency}",
            "plan": "quick" if self.plan.quick else "full",
        }

    async def run(self) -> Results:
        await self.database_ceilings()
        await self.broker_round_trip()
        await self.naive_peer()
        await self.worker()
        await self.startup()
        self.judge()
        return self.results

    async def startup(self) -> None:
        """730 entities cost nothing per batch, and little before the first one."""
        measured = await measure_startup(self.workdir)
        self.say(f"  first migration {measured.first_migration_s:.1f} s, start to ready "
                 f"{measured.start_to_ready_s:.2f} s, idle {measured.idle_mb:.0f} MB")
        targets = self.results.targets
        targets.append(Target("start to ready (/readyz), schema migrated: seconds",
                              measured.start_to_ready_s, 3.0, False))
        targets.append(Target(f"idle memory after ready ({IDLE_S:.0f} s): worker MB",
                              measured.idle_mb, 120, False))
        self.results.notes.append(
            f"First migration of an empty database (736 tables, their keys and foreign "
            f"keys): {measured.first_migration_s:.1f} s.")

    # -- the database alone ------------------------------------------------------------

    async def database_ceilings(self) -> None:
        plan = self.plan
        async with own_database() as dsn:
            await seed_database(dsn)
            commit = await ceiling.commit_ceiling(
                dsn, self.keys, self.db_concurrency, plan.max_s,
                max_rows=min(plan.max_batches * 4, 60_000))
            self._add(_row(COMMIT, 1, commit, None))
            for size in plan.sizes:
                count = _batches_for(plan, size, self.db_concurrency)
                closed, opened = await ceiling.raw_ceiling(
                    dsn, lambda: ceiling.records(self.keys, size, count),  # noqa: B023
                    self.db_concurrency, plan)
                self._add(_row(CEILING, size, closed, opened))

    # -- the broker alone ----------------------------------------------------------------

    async def broker_round_trip(self) -> None:
        # The floor of a consumer's fixed cost per message: through aio-pika (as the worker
        # consumes) and through aiormq's channel directly, below it (issue 21).
        for name, kind in ((BROKER, "echo"), (BROKER_AIORMQ, "echo-aiormq")):
            with own_vhost() as vhost:
                url = amqp_url(vhost)
                async with self._started(kind, python_module(
                        "bench.peers", kind, "--url", url, "--prefetch", str(self.prefetch)),
                        b"consuming") as process, Producer(url) as producer:
                    row = await self._consumer_row(name, 1, self._contender(producer, process))
                    self._add(row)

    # -- the naive peer --------------------------------------------------------------------

    async def naive_peer(self) -> None:
        async with own_services() as (url, dsn):
            command = python_module("bench.peers", "naive", "--url", url, "--dsn", dsn,
                                    "--prefetch", str(self.prefetch),
                                    "--pool", str(self.db_concurrency))
            async with self._started("naive", command, b"consuming") as process, \
                    Producer(url) as producer:
                naive = self._contender(producer, process)
                for size in self.plan.sizes:
                    self._add(await self._consumer_row(NAIVE, size, naive))

    # -- the worker ------------------------------------------------------------------------

    async def worker(self) -> None:
        async with own_services() as (url, dsn):
            command = self._worker_command(url, dsn)
            async with self._started("worker-1", command, b'"consuming"') as first, \
                    Producer(url) as producer:
                for size in self.plan.sizes:
                    for bad in (False, True):
                        name = WORKER_BAD if bad else WORKER
                        self._add(await self._consumer_row(
                            name, size, self._contender(producer, first, bad=bad)))
                # The same keys again: every item updates a stored row.
                self._add(await self._consumer_row(
                    WORKER_UPDATES, self.plan.ratio_size,
                    dataclasses.replace(self._contender(producer, first),
                                        make=self.keys.written().batches)))
                await self._widest(dsn, url, first)
                await self._gateway(dsn, url, first)
                async with self._started("worker-2", command, b'"consuming"') as second:
                    both = dataclasses.replace(self._contender(producer, first, second),
                                               window=2 * self.window)
                    self._add(await self._consumer_row(TWO_WORKERS, self.plan.scaling_size,
                                                       both))

    def _worker_command(self, url: str, dsn: str) -> list[str]:
        config = worker_config(self.workdir / "worker.toml", url, dsn)
        return python_module("worker", "run", "--config", str(config))

    def _contender(self, producer: Producer | HttpProducer, *processes: Process,
                   bad: bool = False) -> Contender:
        """The Benefit batches (with 1% bad items if asked), the usual window."""

        def make(size: int, count: int) -> Batches:
            return make_batches(self.keys, size, count, bad=bad)

        return Contender(producer, processes, self.window, make)

    async def _gateway(self, dsn: str, url: str, worker: Process) -> None:
        """The same batches through the HTTP gateway: its cost over the client library."""
        port = free_port()
        gateway_config = worker_config(self.workdir / "gateway.toml", url, dsn,
                                       gateway={"listen": f"127.0.0.1:{port}"})
        command = python_module("worker", "gateway", "--config", str(gateway_config))
        async with self._started("gateway", command, b'"gateway ready"') as gateway, \
                HttpProducer(f"http://127.0.0.1:{port}") as http:
            for size in self.plan.gateway_sizes:
                self._add(await self._consumer_row(GATEWAY, size,
                                                   self._contender(http, worker, gateway)))

    async def _widest(self, dsn: str, url: str, process: Process) -> None:
        """The widest entity (655 fields), 100-item batches, every field set."""
        wide = WideItems(self.keys)
        conn = await asyncpg.connect(dsn)
        try:
            await wide.seed_parents(conn)
        finally:
            await conn.close()
        async with Producer(url, path=wide.path, routing_key=wide.entity.name) as producer:
            contender = dataclasses.replace(self._contender(producer, process),
                                            make=wide.make_batches)
            self._add(await self._consumer_row(WIDEST_ROW, self.plan.latency_size, contender))

    async def _consumer_row(self, name: str, size: int, contender: Contender) -> Row:
        """Closed loop for the maximum rate, then an open loop at half of it for latency."""
        plan = self.plan
        producer, processes, make = contender.producer, contender.processes, contender.make
        warmup = make(size, 2)
        loops = Loops(producer.call)
        await loops.closed(warmup.bodies, 2, 60)
        producer.reset()
        for p in processes:
            p.reset_peak_memory()
        closed: Run | None = None
        for _ in range(plan.repeats):
            work = make(size, _batches_for(plan, size, contender.window))
            meter = CpuMeter([p.pid for p in processes])
            meter.start()
            run = await loops.closed(work.bodies, contender.window, plan.max_s)
            run.cpu = meter.stop(run.batches * size)
            del work
            if closed is None or run.per_s(run.batches) > closed.per_s(closed.batches):
                closed = run
        assert closed is not None
        half_rate = max(closed.per_s(closed.batches) / 2, 0.5)
        count = max(1, min(plan.max_batches, int(half_rate * plan.latency_s)))
        opened_work = make(size, count)
        opened = await loops.open(opened_work.bodies, half_rate, plan.latency_s)
        peak = max(p.memory_kib()[1] for p in processes)
        if set(producer.statuses) != {207}:
            raise RuntimeError(f"{name} at {size}: unexpected reply statuses "
                               f"{producer.statuses}")
        self.say(f"  {name:<36} {size:>6,} items/batch: "
                 f"{closed.per_s(closed.batches * size):>10,.0f} items/s")
        return _row(name, size, closed, opened, peak)

    @contextlib.asynccontextmanager
    async def _started(self, label: str, command: list[str], ready: bytes,
                       env: dict[str, str] | None = None) -> AsyncIterator[Process]:
        """``command`` running until the block ends, once it logged ``ready``; its log in
        the run's work directory, named by ``label``."""
        log = self.workdir / f"{label}.log"
        process = Process(command, log, env)
        try:
            await wait_for_log(log, ready, process)
            yield process
        finally:
            code = process.stop()
            if code not in (0, -15):
                self.say(f"  {label} exited with {code}; its log: {log}")

    # -- the worker over time, and over its settings -------------------------------------

    async def soak(self, duration_s: float) -> list[tuple[float, float]]:
        """The worker under steady 1,000-item load for ``duration_s``: (elapsed s, RSS MB)
        samples every 10 s, to show whether memory stays flat."""
        samples: list[tuple[float, float]] = []
        async with own_services() as (url, dsn):
            command = self._worker_command(url, dsn)
            async with self._started("worker-soak", command, b'"consuming"') as process, \
                    Producer(url) as producer:
                loop = asyncio.get_running_loop()
                started = loop.time()
                stop = asyncio.Event()

                async def sample() -> None:
                    while not stop.is_set():
                        elapsed = loop.time() - started
                        rss = _mb(process.memory_kib()[0])
                        samples.append((elapsed, rss))
                        self.say(f"  soak {elapsed:6.0f} s: RSS {rss:.0f} MB")
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), 10)

                sampler = asyncio.create_task(sample())
                loops = Loops(producer.call)
                while loop.time() - started < duration_s:
                    work = make_batches(self.keys, 1000, 200)
                    await loops.closed(work.bodies, self.window,
                                       duration_s - (loop.time() - started))
                stop.set()
                await sampler
        return samples

    async def sweep(self) -> list[tuple[int, int, int, float]]:
        """The worker's rate over prefetch x pool size, for choosing their defaults:
        (prefetch, pool, batch size, items/s), each closed loop the plan's max_s long."""
        max_s = self.plan.max_s
        out: list[tuple[int, int, int, float]] = []
        async with own_services() as (url, dsn):
            command = self._worker_command(url, dsn)
            for prefetch in SWEEP_PREFETCH:
                for pool in SWEEP_POOL:
                    if pool > prefetch:
                        continue
                    env = {"UPSERT_AMQP__PREFETCH_COUNT": str(prefetch),
                           "UPSERT_DATABASES__BENCH__POOL_MAX_SIZE": str(pool)}
                    async with self._started(f"sweep-{prefetch}-{pool}", command,
                                             b'"consuming"', env) as _, \
                            Producer(url) as producer:
                        loops = Loops(producer.call)
                        for size in SWEEP_SIZES:
                            await loops.closed(make_batches(self.keys, size, 4).bodies, 2, 60)
                            window = 2 * prefetch
                            work = make_batches(self.keys, size,
                                                _batches_for(self.plan, size, window))
                            run = await loops.closed(work.bodies, window, max_s)
                            rate = run.per_s(run.batches * size)
                            self.say(f"  prefetch {prefetch:3} pool {pool:2} size {size:5,}: "
                                     f"{rate:10,.0f} items/s")
                            out.append((prefetch, pool, size, rate))
        return out

    # -- verdicts ----------------------------------------------------------------------------

    def _add(self, row: Row) -> None:
        results = self.results
        if row.name not in (CEILING, COMMIT, BROKER, BROKER_AIORMQ, WIDEST_ROW):  # like with like
            base = results.find(CEILING, row.size)
            naive = results.find(NAIVE, row.size)
            row.vs_ceiling = row.items_per_s / base.items_per_s if base else None
            if row.name != NAIVE:
                row.vs_naive = row.items_per_s / naive.items_per_s if naive else None
            clean = results.find(WORKER, row.size)
            if row.name in (WORKER_BAD, TWO_WORKERS, WORKER_UPDATES) and clean is not None:
                row.vs_clean = row.items_per_s / clean.items_per_s
        if row.name == CEILING:
            self.say(f"  {row.name:<36} {row.size:>6,} items/batch: "
                     f"{row.items_per_s:>10,.0f} items/s")
        elif row.name in (COMMIT,):
            self.say(f"  {row.name:<36} {row.size:>6,}            : "
                     f"{row.items_per_s:>10,.0f} tx/s")
        results.rows.append(row)

    def judge(self) -> None:
        r = self.results
        sizes = self.plan.sizes
        big, mid, huge = self.plan.ratio_size, self.plan.latency_size, max(sizes)
        worker_big = r.find(WORKER, big)
        ceiling_big = r.find(CEILING, big)
        naive_big = r.find(NAIVE, big)
        if worker_big and ceiling_big and naive_big:
            r.targets.append(Target(f"{big:,}-item batches: worker / raw ceiling",
                                    worker_big.items_per_s / ceiling_big.items_per_s, 0.7, True))
            r.targets.append(Target(f"{big:,}-item batches: worker / naive peer",
                                    worker_big.items_per_s / naive_big.items_per_s, 2.0, True))
            self._cpu_notes(worker_big, ceiling_big, naive_big)
            self._cpu_targets(worker_big, ceiling_big, naive_big)
        for size in sizes:
            bad = r.find(WORKER_BAD, size)
            if bad is not None and bad.vs_clean is not None:
                r.targets.append(Target(f"{size:,}-item batches, 1% bad: worker / its clean rate",
                                        bad.vs_clean, 0.7, True))
        via_http = r.find(GATEWAY, 1)
        if via_http and r.find(WORKER, 1):
            direct = r.find(WORKER, 1)
            assert direct is not None
            # Issue 21 raised this from 1 / 1.3.
            r.targets.append(Target("1-item batches: HTTP gateway / client library",
                                    via_http.items_per_s / direct.items_per_s, 0.9, True))
        self._gateway_notes()
        one, echo = r.find(WORKER, 1), r.find(BROKER, 1)
        if one and echo:
            # Issue 21 raised this from 0.8.
            r.targets.append(Target("1-item batches: worker / bare broker round trip",
                                    one.items_per_s / echo.items_per_s, 0.9, True))
            self._one_item_note(one, echo)
        self._small_batch_targets(10)
        middle = r.find(WORKER, mid)
        if middle and middle.p99_ms is not None:
            r.targets.append(Target(f"{mid:,}-item batches: p99 ms at half the maximum rate",
                                    middle.p99_ms, 100, False))
        peaks = [row.peak_mb for row in r.rows
                 if row.name in (WORKER, WORKER_BAD) and row.size == huge and row.peak_mb]
        if peaks:
            r.targets.append(Target(f"{huge:,}-item batches: worker peak MB (defaults)",
                                    max(peaks), 250, False))

    def _small_batch_targets(self, size: int) -> None:
        """Issue 21: the fixed cost of a batch, at the sizes HTTP callers send, against the
        floor (a bare consumer's cost per message, through aio-pika and through aiormq)."""
        r = self.results
        worker, naive, ceiling_row = r.find(WORKER, size), r.find(NAIVE, size), \
            r.find(CEILING, size)
        echo, below = r.find(BROKER, 1), r.find(BROKER_AIORMQ, 1)
        if worker is None or naive is None or ceiling_row is None:
            return
        r.targets.append(Target(f"{size:,}-item batches: worker / naive peer",
                                worker.items_per_s / naive.items_per_s, 2.0, True))
        r.targets.append(Target(f"{size:,}-item batches: worker / raw per-batch ceiling",
                                worker.items_per_s / ceiling_row.items_per_s, 1.0, True))
        w, n = worker.cpu, naive.cpu
        if w is None or n is None or n.consumer <= 0:
            return
        r.targets.append(Target(f"{size:,}-item batches: worker CPU per batch / naive peer's",
                                w.consumer / n.consumer, 0.4, False))
        if echo is None or echo.cpu is None or echo.cpu.consumer <= 0:
            return
        per_batch = w.consumer * size
        r.targets.append(Target(f"{size:,}-item batches: worker CPU per batch / bare "
                                f"consumer's per message", per_batch / echo.cpu.consumer,
                                1.5, False))
        floor = (f"; through aiormq directly {below.cpu.consumer:.0f} us"
                 if below is not None and below.cpu is not None else "")
        r.notes.append(
            f"The fixed cost of a batch (issue 21): at {size:,} items the worker spends "
            f"{per_batch:.0f} us of CPU per batch, the naive peer {n.consumer * size:.0f} "
            f"us; a bare consumer (consume, confirmed reply, ack) spends "
            f"{echo.cpu.consumer:.0f} us per message through aio-pika{floor}.")

    def _cpu_targets(self, worker: Row, ceiling_row: Row, naive: Row) -> None:
        """CPU per item, by process: what decides cost as workers scale out.  The database
        is what every worker shares, so its CPU per item bounds the whole system."""
        w, c, n = worker.cpu, ceiling_row.cpu, naive.cpu
        if w is None or c is None or n is None:
            return
        size, r = worker.size, self.results
        r.targets.append(Target(f"{size:,}-item batches: worker CPU us per item",
                                w.consumer, 6.0, False))
        if n.consumer > 0:
            r.targets.append(Target(f"{size:,}-item batches: worker CPU per item / naive "
                                    f"peer's", w.consumer / n.consumer, 0.5, False))
        if c.postgres > 0:
            r.targets.append(Target(f"{size:,}-item batches: PostgreSQL CPU per item, "
                                    f"worker's path / raw ceiling's",
                                    w.postgres / c.postgres, 1.0, False))
        bodies = make_batches(self.keys, size, max(1, 50_000 // size))
        fast, pydantic = reading_us_per_item(bodies)
        r.notes.append(
            f"Of the worker's {w.consumer:.1f} us per item at {size:,} items, reading the "
            f"items as it does (the fast reader) alone costs {fast:.1f} us, and pydantic's "
            f"validate_json, which reads whatever the fast reader refuses, {pydantic:.1f} us: "
            f"measured in the benchmark's own process on bodies like them (best of three "
            f"passes, nothing else running in that process).")
        figures = [f"{row.size:,} items: {row.cpu.consumer:.1f} us per item, "
                   f"{row.cpu.consumer * row.size:,.0f} us per batch"
                   for row in r.rows if row.name == WORKER and row.cpu is not None]
        r.notes.append("Worker CPU by batch size: " + "; ".join(figures) + ".")
        updates = r.find(WORKER_UPDATES, size)
        if updates is not None and updates.cpu is not None:
            r.notes.append(
                f"{size:,}-item batches of updates only: worker {updates.cpu.consumer:.1f} "
                f"us, PostgreSQL {updates.cpu.postgres:.1f} us, RabbitMQ "
                f"{updates.cpu.rabbitmq:.1f} us per item (inserts: {w.consumer:.1f}, "
                f"{w.postgres:.1f}, {w.rabbitmq:.1f}).")

    def _one_item_note(self, worker: Row, echo: Row) -> None:
        """What 0.9x the bare broker round trip leaves the worker, from the CPU split: the
        rate is the cores busy over all CPU spent per batch."""
        w, e = worker.cpu, echo.cpu
        if w is None or e is None or echo.items_per_s <= 0:
            return
        allowed = w.cores_busy / (0.9 * echo.items_per_s) * 1e6
        others = w.postgres + w.rabbitmq + w.load
        self.results.notes.append(
            f"1-item batches: 0.9x the bare broker round trip means {allowed:,.0f} us of CPU "
            f"per batch in all at the worker's {w.cores_busy:.2f} cores busy; PostgreSQL, "
            f"RabbitMQ and the load generator spend {others:,.0f} of it, which leaves the "
            f"worker {allowed - others:,.0f} us (it spends {w.consumer:,.0f}; the bare "
            f"broker's consumer, which only takes the message, publishes a confirmed reply "
            f"and acknowledges, spends {e.consumer:,.0f}).")

    def _gateway_notes(self) -> None:
        """What the HTTP gateway adds to the client library's latency (each at half its
        own maximum rate) and takes from its throughput."""
        for size in self.plan.gateway_sizes:
            via_http, direct = self.results.find(GATEWAY, size), self.results.find(WORKER, size)
            if not (via_http and direct and via_http.p50_ms is not None
                    and direct.p50_ms is not None and via_http.p99_ms is not None
                    and direct.p99_ms is not None):
                continue
            self.results.notes.append(
                f"{size:,}-item batches through the HTTP gateway: "
                f"{via_http.items_per_s / direct.items_per_s:.2f}x the client library's "
                f"rate; latency p50 {via_http.p50_ms:.1f} ms against {direct.p50_ms:.1f} ms "
                f"({via_http.p50_ms - direct.p50_ms:+.1f}), p99 {via_http.p99_ms:.1f} ms "
                f"against {direct.p99_ms:.1f} ms ({via_http.p99_ms - direct.p99_ms:+.1f}).")

    def _cpu_notes(self, worker: Row, ceiling_row: Row, naive: Row) -> None:
        """What the measured CPU per item says the 1,000-item ratios can be on this machine:
        with its cores saturated, rates go as the inverse of all CPU spent per item."""
        w, c, n = worker.cpu, ceiling_row.cpu, naive.cpu
        if w is None or c is None or n is None or w.total <= 0:
            return
        others = w.postgres + w.rabbitmq + w.load
        notes = self.results.notes
        notes.append(
            f"{worker.size:,}-item batches, CPU per item: the ceiling spends {c.total:.1f} us "
            f"in all; the worker's path spends {w.total:.1f} us, of which {others:.1f} us "
            f"outside the worker (PostgreSQL {w.postgres:.1f}, RabbitMQ {w.rabbitmq:.1f}, "
            f"load generator {w.load:.1f}). A worker costing no CPU at all would reach about "
            f"{c.total / others:.2f}x the ceiling; 0.7x leaves the worker "
            f"{max(c.total / 0.7 - others, 0):.1f} us per item (it spends {w.consumer:.1f}).")
        notes.append(
            f"2x the naive peer means {n.total / 2:.1f} us per item in all (half the peer's "
            f"{n.total:.1f}), against {others:.1f} us that the worker's path spends outside "
            f"the worker.")
        # The load generator does about the same work per item for both (the same bodies,
        # a reply each): what it spent tells whether the machine's speed changed between
        # the two rows, measured minutes apart.
        ratio = f" ({w.load / n.load:.2f}x)" if n.load > 0 else ""
        notes.append(
            f"The machine's speed between the naive peer's {worker.size:,}-item row and the "
            f"worker's: the load generator, whose work per item is about the same for both, "
            f"spent {n.load:.1f} and {w.load:.1f} us per item{ratio}; far from 1, every "
            f"figure of the later row reads that much off.")
