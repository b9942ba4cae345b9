"""python -m bench.stages [--sizes 1,10,100] [--seconds 10] [--output FILE]

The worker's CPU per batch split by stage (issue 21: its fixed cost per batch).  For each
batch size, one real worker (default settings, JSON logs) in a vhost and a database of its
own: a warm-up, then a closed loop with as many batches in flight as python -m bench keeps
(twice the default prefetch) while py-spy samples the worker's stacks.  The worker's CPU
per batch is read from /proc around the loop (bench.cpu); each sample is charged to the
first stage of bench.stacks.STAGES that a frame of its stack matches, and each stage gets
its share of the samples of that CPU.  Prints the table; with --output, writes it into that
file between its STAGES markers (the text around them is kept).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import resource
import shutil
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.cpu import CpuMeter, cpu_times
from bench.data import Keys, make_batches
from bench.load import Loops, Producer
from bench.report import STAGES_BEGIN, STAGES_END, write_section
from bench.runner import head_commit, now_utc
from bench.services import Process, own_services, python_module, wait_for_log, worker_config
from bench.stacks import OTHER, STAGES, Profile, tally
from worker.settings import Settings

SIZES = (1, 10, 100)
SECONDS = 10
RATE_HZ = 500
# The warm-up: a closed loop this long, on at most this many items.
WARMUP_S = 3.0
WARMUP_ITEMS = 30_000
# The measured loop outlasts py-spy's sampling by this much (py-spy takes a moment to
# attach), on work for this many times the warm-up's rate, made this many batches at a time
# and at most this many items (about 400 bytes of JSON each).
SLACK_S = 2.0
HEADROOM = 1.5
CHUNK = 500
MAX_ITEMS = 1_000_000


@dataclass(frozen=True)
class Measured:
    """One batch size: the worker's CPU per batch (/proc), the part of it in the kernel,
    and the cores it kept busy over the loop; py-spy's samples meanwhile and the cores
    py-spy itself kept busy."""

    size: int
    us_per_batch: float
    cores: float
    profile: Profile
    seconds: int
    kernel_us_per_batch: float = 0.0
    spy_cores: float = 0.0

    @property
    def sampled_cores(self) -> float:
        """The cores busy that the samples read: one per RATE_HZ samples a second."""
        return self.profile.samples / (RATE_HZ * self.seconds)


def _items(size: int) -> str:
    return f"{size:,} item" + ("" if size == 1 else "s")


def table(measured: Sequence[Measured]) -> str:
    """Rows the stages, two columns for each size: us of worker CPU per batch, and %."""
    head = "| stage | " + " | ".join(f"{_items(m.size)}: us per batch | %"
                                     for m in measured) + " |"
    lines = [head, "|---|" + "---|---|" * len(measured)]

    def row(label: str, shares: Iterable[float]) -> str:
        cells = " | ".join(f"{m.us_per_batch * s:,.0f} | {s * 100:.1f}"
                           for m, s in zip(measured, shares, strict=True))
        return f"| {label} | {cells} |"

    for name in [*(name for name, _ in STAGES), OTHER]:
        lines.append(row(name, (m.profile.share(name) for m in measured)))
    lines.append(row("**all: the worker's CPU per batch**", (1.0 for _ in measured)))
    lines.append(row("of which socket sends seen by py-spy (none under uvloop: in C)",
                     (m.profile.send_share for m in measured)))
    lines.append(row("the worker's kernel time, every syscall (/proc stime)",
                     (m.kernel_us_per_batch / m.us_per_batch if m.us_per_batch else 0.0
                      for m in measured)))
    return "\n".join(lines)


def render(measured: Sequence[Measured], context: dict[str, str]) -> str:
    per_batch = ", ".join(f"{_items(m.size)} {m.us_per_batch:,.0f} us" for m in measured)
    cores = "; ".join(f"{_items(m.size)}: samples {m.sampled_cores:.2f}, /proc {m.cores:.2f}, "
                      f"py-spy itself {m.spy_cores:.2f}" for m in measured)
    seconds = measured[0].seconds if measured else SECONDS
    return "\n".join([
        f"Run: date: {context['date']}, commit: {context['commit']}; the worker's CPU per "
        f"batch (/proc, closed loop of {2 * default_prefetch()} batches in flight, default "
        f"settings): {per_batch}.", "", table(measured), "",
        f"- py-spy sampled the worker's stacks {RATE_HZ} times a second for {seconds} s at "
        f"each size, without pausing it (--nonblocking): its overhead on the worker is "
        f"small. A sample is charged to the first stage, top down, that a frame of its "
        f"stack matches (bench/stacks.py); a stage's us per batch is its share of the "
        f"samples times the worker's CPU per batch.",
        "- The samples are wall-clock time while the worker runs or waits for a core, not "
        "CPU time: a socket send that wakes PostgreSQL or RabbitMQ on a shared machine is "
        "charged with the time the worker then waits for a core. The worker's event loop is "
        "uvloop, whose socket reads and writes are C, not Python frames: their time goes to "
        "the stage whose frame called them. The last row is all the worker's CPU in the "
        "kernel, as /proc counts it. "
        f"Cores busy by the samples and by /proc: {cores}.",
        "- Reply publish and ack are the worker's side of them, up to aiormq's queue of "
        "outgoing frames; aiormq's writer task writes those frames to the socket (its own "
        "row)."])


def default_prefetch() -> int:
    return Settings(_env_file=None).amqp.prefetch_count  # type: ignore[call-arg]


def find_py_spy() -> str:
    """py-spy next to this Python (the venv's bin) or on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("py-spy")
    if found is None:
        raise SystemExit(f"py-spy is neither next to {sys.executable} nor on PATH: "
                         f"pip install py-spy (or the test extra: pip install -e '.[test]')")
    return found


def say(text: str) -> None:
    print(text, flush=True)


def bodies(keys: Keys, size: int, count: int) -> list[bytes]:
    """``count`` batch bodies, made ``CHUNK`` at a time so that only the bodies are kept."""
    out: list[bytes] = []
    while len(out) < count:
        out += make_batches(keys, size, min(CHUNK, count - len(out))).bodies
    return out


@dataclass(frozen=True)
class Spy:
    """py-spy (its path), writing raw samples to ``output`` and what it says to ``log``."""

    executable: str
    output: Path
    log: Path

    async def start(self, pid: int, seconds: int) -> asyncio.subprocess.Process:
        with self.log.open("wb") as log:
            return await asyncio.create_subprocess_exec(
                self.executable, "record", "--pid", str(pid), "--rate", str(RATE_HZ),
                "--format", "raw", "--output", str(self.output), "--duration", str(seconds),
                "--nonblocking", stdout=log, stderr=log)

    async def profile(self, spy: asyncio.subprocess.Process) -> Profile:
        if await spy.wait() != 0 or not self.output.exists():
            raise RuntimeError(f"py-spy exited with {spy.returncode}: "
                               f"{self.log.read_text(errors='replace')[-2000:]}")
        with self.output.open() as lines:
            return tally(lines)


def _children_cpu_s() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


async def profiled(producer: Producer, pid: int, size: int, seconds: int,
                   spy: Spy) -> Measured:
    """A warm-up, then the closed loop that py-spy samples and /proc measures."""
    window, keys = 2 * default_prefetch(), Keys()  # a database of its own: any keys
    loops = Loops(producer.call)
    warm = await loops.closed(bodies(keys, size, max(4 * window, WARMUP_ITEMS // size)),
                              window, WARMUP_S)
    producer.reset()
    loop_s = seconds + SLACK_S
    count = math.ceil(warm.per_s(warm.batches) * loop_s * HEADROOM)
    work = bodies(keys, size, max(window, min(count, MAX_ITEMS // size)))
    spy_started = _children_cpu_s()
    sampling = await spy.start(pid, seconds)
    meter = CpuMeter([pid])
    meter.start()
    kernel_s = cpu_times(pid)[1]
    run = await loops.closed(work, window, loop_s)
    kernel_s = cpu_times(pid)[1] - kernel_s
    cpu = meter.stop(run.batches * size)
    profile = await spy.profile(sampling)
    spy_cores = (_children_cpu_s() - spy_started) / seconds
    if set(producer.statuses) != {207}:
        raise RuntimeError(f"{size}-item batches: unexpected reply statuses "
                           f"{producer.statuses}")
    if run.elapsed_s < seconds + 1:
        say(f"  the work ran out after {run.elapsed_s:.1f} s, about when py-spy's {seconds} s "
            f"ended: its last samples may be of an idle worker")
    us_per_batch = cpu.consumer * size
    return Measured(size, us_per_batch, us_per_batch * run.per_s(run.batches) / 1e6,
                    profile, seconds, kernel_s / max(run.batches, 1) * 1e6, spy_cores)


async def measure(size: int, seconds: int, py_spy: str, workdir: Path) -> Measured:
    """A worker of its own at ``size``-item batches, profiled."""
    async with own_services() as (url, dsn):
        config = worker_config(workdir / f"worker-{size}.toml", url, dsn)
        log = workdir / f"worker-{size}.log"
        process = Process(python_module("worker", "run", "--config", str(config)), log)
        try:
            await wait_for_log(log, b'"consuming"', process)
            async with Producer(url) as producer:
                spy = Spy(py_spy, workdir / f"py-spy-{size}.raw",
                          workdir / f"py-spy-{size}.log")
                return await profiled(producer, process.pid, size, seconds, spy)
        finally:
            code = process.stop()
            if code not in (0, -15):
                say(f"  the worker exited with {code}; its log: {log}")


async def measure_all(sizes: Sequence[int], seconds: int, py_spy: str,
                      workdir: Path) -> list[Measured]:
    out = []
    for size in sizes:
        measured = await measure(size, seconds, py_spy, workdir)
        say(f"  {_items(measured.size):>12}: {measured.us_per_batch:,.0f} us of worker CPU per "
            f"batch, {measured.profile.samples:,} samples")
        out.append(measured)
    return out


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"not a list of batch sizes: {text!r}")
    return sizes


def _seconds(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a whole number of seconds: {text!r}")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__)
    parser.add_argument("--sizes", type=_sizes, default=SIZES,
                        help="batch sizes, comma-separated (default: 1,10,100)")
    parser.add_argument("--seconds", type=_seconds, default=SECONDS,
                        help=f"how long py-spy samples at each size (default: {SECONDS})")
    parser.add_argument("--output", type=Path, default=None,
                        help="markdown file to write the table into, between its STAGES "
                             "markers (default: print it only)")
    args = parser.parse_args(argv)
    py_spy = find_py_spy()
    workdir = Path(tempfile.mkdtemp(prefix="bench-stages-"))
    say(f"stages: sizes {list(args.sizes)}, {args.seconds} s each; the workers' logs and "
        f"py-spy's samples in {workdir}")
    measured = asyncio.run(measure_all(args.sizes, args.seconds, py_spy, workdir))
    text = render(measured, {"date": now_utc(), "commit": head_commit()})
    say("")
    say(text)
    if args.output is not None:
        write_section(args.output, text, STAGES_BEGIN, STAGES_END)
        say(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
