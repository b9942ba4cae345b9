"""No password of the configuration ever shows: not in command output, log lines, replies or
dead letters.  Drivers quote what they were given, and a password holding an unencoded "/"
(common in generated ones) is cut there by URL parsers, its first part read as a port:
"invalid literal for int() with base 10: 's3cret-...'"."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import aio_pika
import orjson

from tests.support import samples
from tests.support.command_line import run_cli
from tests.support.configs import write_toml
from tests.support.paths import ROOT
from tests.support.producer import Producer
from tests.support.services import SERVICES, amqp_url, free_port, unique
from tests.support.waiting import wait_until
from worker.amqp.topology import DEAD_QUEUE
from worker.redaction import redact, secrets_of
from worker.settings import Settings


def password() -> str:
    return f"s3cret-{uuid.uuid4().hex[:12]}"


def pg_base() -> str:
    """The tests' PostgreSQL server, as scheme://user@host:port."""
    return SERVICES.pg_dsn.rpartition("/")[0]


def with_password(base: str, secret: str) -> str:
    scheme, _, rest = base.partition("://")
    user, _, host = rest.rpartition("@")
    return f"{scheme}://{user.partition(':')[0] or 'root'}:{secret}@{host}"


async def test_migrate_never_prints_a_dsn_password(tmp_path: Path) -> None:
    closed, slashed, nameless = password(), password(), password()
    config = write_toml(tmp_path / "c.toml", {"databases": {
        # Nothing listens there.
        "closed": {"dsn": f"postgresql://root:{closed}@127.0.0.1:{free_port()}/x"},
        # An unencoded "/" in the password: parsers cut the URL there.
        "slashed": {"dsn": with_password(pg_base(), f"{slashed}/x") + "/x"},
        # No database name, and the one the driver then uses does not exist.
        "nameless": {"dsn": with_password(pg_base(), nameless)},
    }})
    code, out, err = await run_cli("migrate", "--config", str(config),
                                   env={"PGDATABASE": unique("missing")})
    assert code == 1
    assert {line.split(":")[0] for line in err.splitlines()} == {"closed", "slashed",
                                                                 "nameless"}, err
    for secret in (closed, slashed, nameless):
        assert secret not in out + err, err


async def test_broker_password_stays_out_of_status_and_run(tmp_path: Path, vhost: str) -> None:
    wrong, slashed = password(), password()
    database = {"demo": {"dsn": f"postgresql://127.0.0.1:{free_port()}/x"}}
    for url in (amqp_url(vhost, "guest", wrong),  # refused by the broker
                amqp_url(vhost, "guest", f"{slashed}/x")):  # cut by the URL parser
        config = write_toml(tmp_path / "c.toml", {
            "amqp": {"url": url, "connect_timeout_s": 5.0}, "databases": database,
            "metrics": {"port": 0}, "log": {"format": "json"}})
        for command in ("status", "run", "dlq"):
            argv = [command, "list"] if command == "dlq" else [command]
            code, out, err = await run_cli(*argv, "--config", str(config))
            assert code == 1 and "Traceback" in err, err
            assert wrong not in out + err and slashed not in out + err, err


class WorkerProcess:
    """``python -m worker run`` with its log in a file; stopped by its PID."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "worker", "run", "--config", str(config)],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text()

    async def consuming(self) -> None:
        await wait_until(lambda: '"consuming"' in self.text() or self.process.poll(), 30)
        assert self.process.poll() is None, self.text()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def dead_letters(url: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    connection = await aio_pika.connect(url)
    async with connection:
        queue = await (await connection.channel()).get_queue(DEAD_QUEUE, ensure=False)
        found = []
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            found.append(message)
        return found


async def test_worker_logs_replies_and_dead_letters_never_show_a_password(
        tmp_path: Path, vhost: str) -> None:
    """A database that is down (a closed port) and one whose DSN does not parse: the
    worker starts anyway, logs the failed migrations, answers their batches 503 and 500
    after the retries and dead-letters them; the passwords show nowhere."""
    down, slashed = password(), password()
    config = write_toml(tmp_path / "worker.toml", {
        "amqp": {"url": amqp_url(vhost)},
        "databases": {
            "down": {"dsn": f"postgresql://root:{down}@127.0.0.1:{free_port()}/x"},
            "slashed": {"dsn": with_password(pg_base(), f"{slashed}/x") + "/x"}},
        "metrics": {"port": 0}, "retry": {"delays_s": [0.2, 0.4]},
        "log": {"format": "json", "level": "info"}})
    worker = WorkerProcess(config, tmp_path / "worker.log")
    try:
        await worker.consuming()
        async with Producer(amqp_url(vhost)) as producer:
            replies = await asyncio.gather(*(
                producer.call(samples.BENEFIT_PATH, [samples.benefit()], database=name)
                for name in ("down", "slashed")))
        assert [r.status for r in replies] == [503, 500]
        assert "database unreachable" in replies[0].body["error"]["detail"]
        letters = await dead_letters(amqp_url(vhost))
        assert len(letters) == 2
    finally:
        worker.stop()
    log = worker.text()
    assert "database migration failed" in log and "batch failed" in log
    said = [log, *(orjson.dumps(r.body).decode() + repr(r.headers) for r in replies),
            *(repr(letter.headers) for letter in letters)]
    for text in said:
        assert down not in text and slashed not in text, text
    assert "base 10: '***'" in log  # what the slashed password's part was replaced with


def test_every_form_of_a_password_is_masked() -> None:
    settings = Settings(
        amqp={"url": ["amqp://u:first%2Fpass@h1/", "amqp://u:second'pass@h2/"],
              "management_url": "http://u:third-pass@h:15672", "signing_key": "the-key"},
        databases={"demo": {"dsn": "postgresql://u@h/db?password=fourth-pass"}})
    secrets = secrets_of(settings)
    for text in ("first%2Fpass", "first/pass", "first", "second'pass", repr("second'pass"),
                 "third-pass", "fourth-pass", "the-key", "invalid port 'pass'"):
        masked = redact(text, secrets)
        assert not any(word in masked for word in ("first", "second", "third", "fourth",
                                                   "the-key")), (text, masked)
    assert redact("a message about user u on host h", secrets) == \
        "a message about user u on host h"
