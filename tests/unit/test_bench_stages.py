"""python -m bench.stages without running it: the stage each sampled stack is charged to,
the count of py-spy's raw lines by stage, the table, and where py-spy is looked for."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bench.stacks import OTHER, STAGES, stage_of, tally
from bench.stages import Measured, find_py_spy, table

# The bottom of every stack of the worker's event loop, as py-spy writes it.
LOOP = ("_run_module_as_main (<frozen runpy>:198);<module> (worker/__main__.py:5);"
        "run (asyncio/runners.py:190);BaseEventLoop._run_once (asyncio/base_events.py:1922);"
        "Handle._run (asyncio/events.py:80)")
CONSUMER = (LOOP + ";Worker._tracked.<locals>.on_message (worker/service.py:163);"
            "Consumer.on_message (worker/amqp/consumer.py:88);"
            "Consumer.handle (worker/amqp/consumer.py:104)")
FINISH = CONSUMER + ";Consumer.finish (worker/amqp/consumer.py:140)"
WRITE = "_SelectorSocketTransport.write (asyncio/selector_events.py:1057)"

STACKS = {
    CONSUMER + ";Consumer.answer (worker/amqp/consumer.py:124);"
    "Processor.process (worker/processor.py:87);prepare_batch (worker/core/intake.py:76)":
        "validate + plan",
    CONSUMER + ";Delivery.of (worker/amqp/delivery.py:46)": "read delivery",
    FINISH + ";_log_summary (worker/amqp/consumer.py:232);"
    "BoundLoggerLazyProxy.info (structlog/_config.py:353)": "log line",
    # The report of a batch answered logs and counts: its counting is metrics.
    FINISH + ";BatchReport.answered (worker/amqp/answered.py:60);"
    "BatchReport._count (worker/amqp/answered.py:80);"
    "MetricWrapperBase.labels (prometheus_client/metrics.py:174)": "metrics",
    FINISH + ";BatchReport.answered (worker/amqp/answered.py:66)": "log line",
    FINISH + ";Consumer.publish_reply (worker/amqp/consumer.py:170);"
    "Exchange.publish (aio_pika/exchange.py:200);Channel.basic_publish (aiormq/channel.py:700)":
        "reply publish",
    FINISH + ";Delivery.ack (worker/amqp/delivery.py:95);"
    "Channel.basic_ack (aiormq/channel.py:829)": "ack",
    FINISH + ";IncomingMessage.ack (aio_pika/message.py:462)": "ack",
    LOOP + ";GroupCommitter._commit_group (worker/store/grouping.py:135);"
    "Connection.fetch (asyncpg/connection.py:717);" + WRITE: "store: asyncpg (driver + socket)",
    LOOP + ";GroupCommitter._commit_group (worker/store/grouping.py:135)": "store: worker code",
    CONSUMER: "consumer other",
    LOOP + ";Connection.__writer (aiormq/connection.py:834);"
    "StreamWriter.write (asyncio/streams.py:343);" + WRITE:
        "AMQP frame writer (aiormq's writer task)",
    LOOP + ";Connection.__reader (aiormq/connection.py:780);"
    "FrameReceiver.get_frame (aiormq/connection.py:175)":
        "AMQP receive + dispatch (aio-pika/aiormq/pamqp)",
    LOOP + ";EpollSelector.select (selectors.py:468)": "event loop (uvloop, asyncio)",
    "_bootstrap (threading.py:1002);Thread.run (threading.py:982)": OTHER,
}


@pytest.mark.parametrize(("stack", "stage"), STACKS.items(),
                         ids=[f"{i}-{stage}" for i, stage in enumerate(STACKS.values())])
def test_a_stack_goes_to_the_first_stage_a_frame_matches(stack: str, stage: str) -> None:
    assert stage_of(stack.split(";")) == stage


def test_every_stage_is_reached() -> None:
    assert {name for name, _ in STAGES} - set(STACKS.values()) == {
        "reply render", "processor other"}
    assert stage_of([LOOP, "Processor._process (worker/processor.py:92)",
                     "batch_reply (worker/core/replies.py:30)"]) == "reply render"
    assert stage_of([LOOP, "Processor._process (worker/processor.py:92)"]) == "processor other"


def test_raw_lines_are_counted_by_stage_and_innermost_socket_sends() -> None:
    store = LOOP + ";GroupCommitter._commit_group (worker/store/grouping.py:135)"
    lines = [
        f"{store};Connection.fetch (asyncpg/connection.py:717);{WRITE} 30\n",
        f"{store};Connection.fetch (asyncpg/connection.py:717) 10\n",
        # A send that is not the innermost frame is not counted as one.
        f"{LOOP};{WRITE};Handle.cancel (asyncio/events.py:70) 40\n",
        f"{LOOP};BaseSelectorEventLoop.sock_sendall (asyncio/selector_events.py:470) 5\n",
        " 15\n",  # a sample without a Python frame
        "\n", "no count here\n", "Sampling process 500 times a second\n",
    ]
    profile = tally(lines)
    assert profile.samples == 100
    assert dict(profile.stages) == {"store: asyncpg (driver + socket)": 40,
                                    "event loop (uvloop, asyncio)": 45, OTHER: 15}
    assert profile.socket_sends == 35
    assert profile.share("event loop (uvloop, asyncio)") == 0.45
    assert profile.send_share == 0.35
    assert tally([]).share(OTHER) == 0.0


def test_the_table_gives_each_stage_its_share_of_the_cpu_per_batch() -> None:
    profile = tally([f"{CONSUMER};Delivery.of (worker/amqp/delivery.py:46) 25",
                     f"{LOOP};EpollSelector.select (selectors.py:468) 70",
                     f"{LOOP};{WRITE} 5"])
    text = table([Measured(size=10, us_per_batch=800.0, cores=0.5, profile=profile,
                           seconds=1, kernel_us_per_batch=80.0)])
    rows = text.splitlines()
    assert rows[0] == "| stage | 10 items: us per batch | % |"
    assert "| read delivery | 200 | 25.0 |" in rows
    assert "| event loop (uvloop, asyncio) | 600 | 75.0 |" in rows
    assert "| ack | 0 | 0.0 |" in rows
    assert "| **all: the worker's CPU per batch** | 800 | 100.0 |" in rows
    assert rows[-2] == ("| of which socket sends seen by py-spy (none under uvloop: in C) "
                        "| 40 | 5.0 |")
    assert rows[-1] == "| the worker's kernel time, every syscall (/proc stime) | 80 | 10.0 |"
    assert len(rows) == 2 + len(STAGES) + 4


def test_py_spy_is_found_next_to_python_or_on_path(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir, elsewhere = tmp_path / "venv" / "bin", tmp_path / "elsewhere"
    bin_dir.mkdir(parents=True)
    elsewhere.mkdir()
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    monkeypatch.setenv("PATH", str(elsewhere))
    with pytest.raises(SystemExit, match="pip install py-spy"):
        find_py_spy()
    on_path = elsewhere / "py-spy"
    on_path.write_text("#!/bin/sh\n")
    on_path.chmod(0o755)
    assert find_py_spy() == str(on_path)
    beside = bin_dir / "py-spy"
    beside.write_text("#!/bin/sh\n")
    beside.chmod(0o755)
    assert find_py_spy() == str(beside)
