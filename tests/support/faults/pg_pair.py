"""A PostgreSQL primary and its synchronous streaming standby, of the test's own on
127.0.0.1, as production runs the database (a standby that takes over when the primary
dies); never the machine's shared server on 5432.

    with pg_pair() as pair:
        dsn = pair.failover_dsn()          # both hosts, target_session_attrs=read-write
        pair.kill_9_primary()
        pair.promote_standby()

Both servers run with fsync off, as every private server of the fault tests does: a
commit still reaches the operating system (and, synchronous, the standby's) before it
returns, and what these tests do to a server is kill its processes, never the machine, so
nothing committed can be lost for want of an fsync.  What is tested stays honest.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.faults.processes import PrivatePostgres, require_postgres_bindir

STANDBY_NAME = "standby"
SYNC_TIMEOUT_S = 30.0


class PgPair:
    """``primary`` streams to ``standby``; a commit on the primary returns only once the
    standby has its WAL (synchronous_commit = on, the standby named in
    synchronous_standby_names)."""

    def __init__(self) -> None:
        bindir = require_postgres_bindir()
        self.primary = PrivatePostgres(bindir, settings={
            "cluster_name": "primary",
            "wal_level": "replica",
            "synchronous_commit": "on",
            "synchronous_standby_names": STANDBY_NAME,
        })
        # The standby's walreceiver introduces itself by its cluster_name.  Nothing of
        # the primary's synchronous settings: once promoted, alone, it must not wait for
        # a standby that no longer exists.
        self.standby = PrivatePostgres(bindir, settings={"cluster_name": STANDBY_NAME})
        self.promoted = False

    def start(self) -> None:
        self.primary.init()
        self.primary.start()
        # -R: standby.signal and primary_conninfo, so that it starts as a streaming
        # standby of the primary; -X stream: the WAL written meanwhile comes along.
        self.standby.run("pg_basebackup", "-D", str(self.standby.data), "-h", "127.0.0.1",
                         "-p", str(self.primary.port), "-U", PrivatePostgres.USER, "-R",
                         "-X", "stream", "-c", "fast", "--no-sync")
        self.standby.start()
        self.wait_sync()

    def remove(self) -> None:
        try:
            self.standby.remove()
        finally:
            self.primary.remove()

    # --- addresses ---------------------------------------------------------------------

    def primary_dsn(self, database: str = "postgres") -> str:
        return self.primary.dsn(database)

    def standby_dsn(self, database: str = "postgres") -> str:
        return self.standby.dsn(database)

    def failover_dsn(self, database: str = "postgres") -> str:
        """Both servers in one libpq-style URL: a client connects to whichever of them
        accepts writes (asyncpg >= 0.28 reads target_session_attrs from the URL)."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in (self.primary, self.standby))
        return (f"postgresql://{PrivatePostgres.USER}@{hosts}/{database}"
                "?target_session_attrs=read-write")

    # --- faults ------------------------------------------------------------------------

    def kill_9_primary(self) -> None:
        """SIGKILL to the primary's postmaster, by its PID."""
        self.primary.kill_9()

    def promote_standby(self) -> None:
        """The standby takes over: it finishes replaying the WAL it has, then accepts writes."""
        self.standby.promote()
        self.promoted = True

    # --- state -------------------------------------------------------------------------

    def sync_state(self) -> list[list[str]]:
        """[application_name, state, sync_state] of each standby the primary streams to."""
        return self.primary.query(
            "SELECT application_name, state, sync_state FROM pg_stat_replication")

    def wait_sync(self, timeout_s: float = SYNC_TIMEOUT_S) -> None:
        """Until the standby streams synchronously, or fail with both servers' logs."""
        deadline = time.monotonic() + timeout_s
        state: list[list[str]] = []
        while time.monotonic() < deadline:
            state = self.sync_state()
            if state == [[STANDBY_NAME, "streaming", "sync"]]:
                return
            time.sleep(0.1)
        raise TimeoutError(f"standby not synchronous after {timeout_s} s: {state}\n"
                           f"--- primary\n{self.primary.server_log()}\n"
                           f"--- standby\n{self.standby.server_log()}")


@contextmanager
def pg_pair() -> Iterator[PgPair]:
    """A primary and a synchronous standby, both running; both stopped and removed
    afterwards, also when starting failed half-way."""
    pair = PgPair()
    try:
        pair.start()
        yield pair
    finally:
        pair.remove()
