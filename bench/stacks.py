"""py-spy's samples of the worker by stage (python -m bench.stages): which stage a sampled
stack is charged to, and the samples of a raw py-spy output counted by stage."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# A sample goes to the first stage that a frame of its stack ("function (file:line)", as
# py-spy writes them) matches: the worker's own steps first, then the libraries under them
# (every stack of the event loop's thread has asyncio's frames at its bottom).  Metrics come
# before the log line as the worker's report of a batch answered (BatchReport.answered)
# does both.  Both the worker's aio-pika consumer and its aiormq one are recognised.
STAGES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern)) for name, pattern in (
        ("metrics", r"prometheus_client/|worker/metrics\.py|_record \(worker/amqp/"
                    r"|BatchReport\._count "),
        ("log line", r"structlog/|_log_summary |BatchReport\.answered |LineBudget\."),
        ("reply publish", r"publish_reply "),
        ("ack", r"IncomingMessage\.ack |\.ack \(aio_pika/|Delivery\.ack |basic_ack "),
        ("read delivery", r"Delivery\.of "),
        ("validate + plan", r"prepare_batch "),
        ("reply render", r"batch_reply |problem_reply "),
        ("store: asyncpg (driver + socket)", r"asyncpg/"),
        ("store: worker code", r"worker/store/"),
        ("processor other", r"worker/processor"),
        ("consumer other", r"worker/amqp/|worker/service\.py"),
        # The task of aiormq's connection that writes every outgoing frame to the socket:
        # the replies', the acks'; apart from the receiving side, as it is most of aiormq's.
        ("AMQP frame writer (aiormq's writer task)", r"\.__writer \(aiormq/"),
        ("AMQP receive + dispatch (aio-pika/aiormq/pamqp)", r"aio_pika/|aiormq/|pamqp/"),
        ("event loop (uvloop, asyncio)", r"asyncio/|uvloop/"),
    ))
OTHER = "other"
# An innermost frame that writes to a socket: a syscall, in whatever stage.
SOCKET_SEND = re.compile(r"^(?:_SelectorSocketTransport\.write|(?:\w+\.)?sock_sendall) \(")


def stage_of(frames: Sequence[str]) -> str:
    """The stage a sampled stack (its frames, outermost first) is charged to."""
    for name, pattern in STAGES:
        if any(pattern.search(frame) for frame in frames):
            return name
    return OTHER


@dataclass
class Profile:
    """py-spy's samples of one loop: how many, by stage, and how many had a socket send as
    their innermost frame."""

    samples: int = 0
    stages: Counter[str] = field(default_factory=Counter)
    socket_sends: int = 0

    def share(self, stage: str) -> float:
        return self.stages[stage] / self.samples if self.samples else 0.0

    @property
    def send_share(self) -> float:
        return self.socket_sends / self.samples if self.samples else 0.0


def tally(lines: Iterable[str]) -> Profile:
    """The samples of py-spy's raw output (``frame;frame;... count`` a line, the outermost
    frame first) by stage; a sample without a Python frame is "other", lines of any other
    shape are skipped."""
    profile = Profile()
    for line in lines:
        stack, space, count = line.rstrip("\n").rpartition(" ")
        if not space or not count.isdigit():
            continue
        frames = stack.split(";")
        n = int(count)
        profile.samples += n
        profile.stages[stage_of(frames)] += n
        if SOCKET_SEND.search(frames[-1]):
            profile.socket_sends += n
    return profile
