"""Processes a fault test starts and kills: worker subprocesses, and a private PostgreSQL.

Only processes started here are ever signalled, always by their own PID.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.configs import merged, write_toml
from tests.support.faults.commands import run_bounded
from tests.support.faults.procinfo import children_of, identities, still_running
from tests.support.faults.required import missing
from tests.support.paths import ROOT
from tests.support.services import free_port


def write_config(path: Path, *, amqp_url: str, dsn: str, database: dict[str, Any] | None = None,
                 **sections: dict[str, Any]) -> Path:
    """A worker TOML file: the test's vhost and database (``database``: more settings of
    it, such as its pool size), metrics off, short retries."""
    defaults: dict[str, Any] = {
        "amqp": {"url": amqp_url, "prefetch_count": 8, "publish_timeout_s": 5.0,
                 "connect_timeout_s": 5.0},
        "metrics": {"port": 0},
        "retry": {"delays_s": [0.2, 0.5, 1.0], "max_deliveries": 10},
        "worker": {"shutdown_grace_s": 10.0},
        # A line for every batch: the figures are read off them (worker_log.py).
        "log": {"format": "json", "level": "info", "clean_batch_lines_per_s": 0},
        "databases": {"demo": {"dsn": dsn, **(database or {})}},
    }
    return write_toml(path, merged(defaults, sections))


class WorkerProcess:
    """``python -m worker run --config FILE`` as a child process, its output in a log file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        env = {k: v for k, v in os.environ.items() if not k.startswith("UPSERT_")}
        with self.log.open("ab") as out:
            # A session of its own: a signal meant for the test runner never reaches it.
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "worker", "run", "--config", str(self.config)],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no drain, no close; the broker requeues whatever it had in flight."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    def stop(self) -> None:
        """Whatever state it is in, make sure it is gone (teardown)."""
        if self.running():
            self.kill()

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


# What the ``spawn`` fixture gives a test: ``spawn(dsn, database={...}, **sections)``.
Spawn = Callable[..., WorkerProcess]


def postgres_bindir() -> Path | None:
    """The newest installed PostgreSQL server binaries, if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


class PrivatePostgres:
    """A PostgreSQL server of the test's own, on a free port of 127.0.0.1: the test may stop
    and restart it at will, which it must never do to the machine's shared server.

    initdb refuses to run as root, so under root every server command runs as the
    ``postgres`` OS user, in a temporary directory that user owns.
    """

    USER = "faults"

    def __init__(self, bindir: Path, settings: dict[str, str] | None = None) -> None:
        self.bindir = bindir
        # More server settings (-c name=value) on top of the ones start() always gives.
        self.settings = dict(settings or {})
        self.dir = Path(tempfile.mkdtemp(prefix="vbapi-faults-pg-"))
        self.data = self.dir / "data"
        self.logfile = self.dir / "server.log"
        self.port = 0
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        os.chmod(self.dir, 0o700)

    def run(self, tool: str, *args: str, timeout_s: float = 60) -> str:
        """A server program of this installation (as the postgres user under root); its
        output."""
        command = [str(self.bindir / tool), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        code, output = run_bounded(command, timeout_s)
        if code != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({code}):\n{output}\n"
                               f"{self.server_log()}")
        return output

    def query(self, sql: str, database: str = "postgres") -> list[list[str]]:
        """Rows of ``sql`` as psql prints them unaligned: for a check from code that may
        or may not run in an event loop."""
        out = self.run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.USER,
                       "-d", database, "-X", "-A", "-t", "-F", "\t", "-c", sql, timeout_s=30)
        return [line.split("\t") for line in out.splitlines() if line]

    def init(self) -> None:
        self.run("initdb", "-D", str(self.data), "-U", self.USER, "--auth=trust",
                 "-E", "UTF8", "--no-sync", "--no-instructions")

    def start(self) -> None:
        if not self.port:
            self.port = free_port()
        # fsync off keeps it fast; commits still reach the OS before they return, so killing
        # the server (not the machine) loses nothing that was committed.
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                   f"-c fsync=off -c full_page_writes=off -c max_connections=60 "
                   f"-c shared_buffers=16MB")
        for name, value in self.settings.items():
            assert value and not set(value) & set(" '\"\\"), value  # pg_ctl -o goes via a shell
            options += f" -c {name}={value}"
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-o", options,
                 "-w", "-t", "30", "start")

    def restart(self, mode: str = "fast") -> None:
        """Stop (``fast``: backends terminated; ``immediate``: killed, crash recovery on
        start) and start again on the same port."""
        # -l again: without it the new server would write to pg_ctl's output, which is a
        # pipe of ours that then never reaches end-of-file.
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-m", mode, "-w",
                 "-t", "30", "restart")

    def stop(self, mode: str = "fast") -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.USER}@127.0.0.1:{self.port}/{database}"

    def server_log(self) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""

    def postmaster_pid(self) -> int | None:
        """The PID of this server's postmaster while it runs, else None."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().splitlines()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            return None
        # Only a postgres serving our own data directory counts (PIDs get reused).
        return pid if str(self.data).encode() in cmdline else None

    def kill_9(self) -> None:
        """SIGKILL to the postmaster (its own PID): no shutdown checkpoint, no goodbye to
        clients or standbys.  Returns once it and the processes it had started are gone
        (they notice the postmaster's death and exit by themselves)."""
        pid = self.postmaster_pid()
        assert pid is not None, "not running"
        ours = identities([pid, *children_of(pid)])
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while still_running(ours) and time.monotonic() < deadline:
            time.sleep(0.05)
        for child, _ in still_running(ours):  # started by our postmaster: ours to end
            os.kill(child, signal.SIGKILL)

    def promote(self) -> None:
        """A standby becomes a primary (pg_ctl promote, waiting until it accepts writes)."""
        self.run("pg_ctl", "-D", str(self.data), "-w", "-t", "30", "promote")

    def remove(self) -> None:
        """Stop the server if it runs (pg_ctl, else SIGKILL to its own postmaster), then
        delete its directory: never before it is down, or it would write on into it."""
        if self.postmaster_pid() is not None:
            try:
                self.stop("immediate")
            except Exception:
                pass
        pid = self.postmaster_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while self.postmaster_pid() is not None and time.monotonic() < deadline:
                time.sleep(0.1)
        shutil.rmtree(self.dir, ignore_errors=True)


async def create_migrated(admin_dsn: str, database: str, dsn: str) -> None:
    """Create ``database`` on a private server (through ``admin_dsn``) and migrate it
    (through ``dsn``, which names it)."""
    import asyncpg

    from worker.store.migrations import migrate

    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    await migrate(dsn)


def require_postgres_bindir() -> Path:
    """The server binaries, or skip the test (fail it in CI: tests/support/faults/
    required.py)."""
    bindir = postgres_bindir()
    if bindir is None or not (bindir / "initdb").exists():
        missing("PostgreSQL server binaries (initdb, pg_ctl)")
    return bindir


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A started private server, removed afterwards."""
    server = PrivatePostgres(require_postgres_bindir())
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.remove()
