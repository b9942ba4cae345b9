"""``run``: consume batches until SIGTERM/SIGINT, then drain and exit 0."""

from __future__ import annotations

import argparse
import gc

import uvloop

from worker.cli.common import Commands, add_command
from worker.settings import Settings

# Collections of the youngest generation happen after this many new container objects
# instead of 700.  A large batch makes tens of thousands of dicts and lists, almost all
# freed by reference counting, so with the default threshold the collector runs dozens of
# times per batch for nothing (the saving is measured in BENCHMARKS.md).
GC_YOUNG_THRESHOLD = 50_000


def register(commands: Commands) -> None:
    add_command(commands, "run", cmd_run,
                about="consume batches until SIGTERM/SIGINT, then drain and exit 0")


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from worker.service import Worker

    _tune_garbage_collector()

    async def run() -> None:
        worker = Worker(settings)
        worker.install_signal_handlers()
        await worker.run()

    # uvloop: the event loop and its sockets in C, as the gateway runs.  With small batches
    # the loop's own work was a fifth of the worker's CPU; uvloop took 9% off a 1- or
    # 10-item batch's CPU (BENCHMARKS.md, issue 21).
    uvloop.run(run())
    return 0


def _tune_garbage_collector() -> None:
    # What is alive once started (modules, models, settings) lives as long as the process:
    # moved out of the collector's way, it is never traversed again.
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 50, 100)
