"""Reaching RabbitMQ and PostgreSQL, for the tests and the benchmark alike: where they are,
how the broker is administered, and a corner of each (a vhost, a database) that nobody else
uses.

Where they are comes from the environment: ``TEST_AMQP_HOST``, ``TEST_AMQP_PORT``,
``TEST_AMQP_USER``, ``TEST_AMQP_PASSWORD``, ``TEST_AMQP_MANAGEMENT_URL`` (administer the
broker through its management HTTP API rather than this machine's ``rabbitmqctl``) and
``TEST_PG_DSN`` (a DSN of a role that may create databases), and the same names starting
with ``BENCH_``.  Each program's own names win: the tests read ``TEST_*`` and fall back to
``BENCH_*``, the benchmark reads ``BENCH_*`` and falls back to ``TEST_*`` (see
:meth:`Services.from_env`).  Unset, the services of this machine: 127.0.0.1:5672 as
guest/guest, and postgresql://root@127.0.0.1:5432/postgres.  For a test session that finds
neither, tests/support/sources.py may start containers instead, and points :data:`SERVICES`
at them (:meth:`Services.use`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import quote

import asyncpg

from tests.support.broker_admin import BrokerAdmin, broker_admin


def unique(prefix: str) -> str:
    """A name nobody else has: for a vhost, a database, a user."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


# Ports handed out in this process: the kernel may give a port that was free a moment ago
# again, and a cluster's nodes take theirs only once they start, after all were chosen.
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now, never one handed out before."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def rabbitmqctl(*args: str, background: bool = False) -> str:
    """Run ``rabbitmqctl -q ARGS`` of this machine and return what it printed; with
    ``background``, start it and return at once (its output and failure ignored).  Only
    for the machine's own broker: ``SERVICES.broker`` reaches any."""
    command = ["rabbitmqctl", "-q", *args]
    if background:
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return ""
    return subprocess.run(command, check=True, capture_output=True, text=True,
                          timeout=60).stdout


def close_connections(vhost: str, name: str, reason: str) -> int:
    """Have the broker close the connections of this vhost whose client properties name
    ``name`` (and only those); returns how many it closed."""
    return SERVICES.broker.close_connections(vhost, name, reason)


@dataclass
class Services:
    """Where the broker and PostgreSQL are, and what a run may make on them."""

    amqp_host: str
    amqp_port: int
    amqp_user: str
    amqp_password: str
    # A DSN of a role that may create and drop databases; others are named after it.
    pg_dsn: str
    # The broker's management HTTP API (http://user:password@host:port), if it is to be
    # administered through that rather than rabbitmqctl of this machine.
    management_url: str | None = None

    @classmethod
    def from_env(cls, *prefixes: str) -> Services:
        """The services the environment names, the first prefix's variables first."""

        def setting(name: str, default: str) -> str:
            for prefix in prefixes:
                value = os.environ.get(f"{prefix}_{name}")
                if value is not None:
                    return value
            return default

        return cls(amqp_host=setting("AMQP_HOST", "127.0.0.1"),
                   amqp_port=int(setting("AMQP_PORT", "5672")),
                   amqp_user=setting("AMQP_USER", "guest"),
                   amqp_password=setting("AMQP_PASSWORD", "guest"),
                   pg_dsn=setting("PG_DSN", "postgresql://root@127.0.0.1:5432/postgres"),
                   management_url=setting("AMQP_MANAGEMENT_URL", "") or None)

    def use(self, other: Services) -> None:
        """Point this one at ``other``'s services, in place: every module that imported it
        (or its bound methods) follows."""
        for f in fields(self):
            setattr(self, f.name, getattr(other, f.name))

    @property
    def broker(self) -> BrokerAdmin:
        """The broker's administration: its HTTP API if :attr:`management_url` is set, else
        rabbitmqctl of this machine."""
        return broker_admin(self.management_url)

    def amqp_url(self, vhost: str, user: str | None = None, password: str | None = None
                 ) -> str:
        """The URL of ``vhost``, as the configured user unless another is given."""
        if user is None:
            user, password = self.amqp_user, self.amqp_password
        return (f"amqp://{user}:{password}@{self.amqp_host}:{self.amqp_port}/"
                f"{quote(vhost, safe='')}")

    def dsn_for(self, database: str) -> str:
        base, _, _ = self.pg_dsn.rpartition("/")
        return f"{base}/{database}"

    @contextlib.contextmanager
    def vhost(self, prefix: str, *, delete_in_background: bool = False) -> Iterator[str]:
        """A fresh vhost the configured user may use, deleted afterwards: in the background
        if asked (deleting one takes a second), else before the block's end returns."""
        vhost = unique(prefix)
        broker = self.broker
        broker.add_vhost(vhost)
        try:
            broker.set_permissions(vhost, self.amqp_user)
            yield vhost
        finally:
            broker.delete_vhost(vhost, wait=not delete_in_background)

    @contextlib.asynccontextmanager
    async def admin(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection as the role of :attr:`pg_dsn`, to create and drop databases."""
        conn = await asyncpg.connect(self.pg_dsn)
        try:
            yield conn
        finally:
            await conn.close()

    async def create_database(self, name: str, template: str | None = None) -> None:
        copy = f' TEMPLATE "{template}"' if template else ""
        async with self.admin() as admin:
            await admin.execute(f'CREATE DATABASE "{name}"{copy}')

    async def drop_database(self, name: str) -> None:
        async with self.admin() as admin:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# The tests' own: their variables first.  A test session may point it elsewhere (containers,
# tests/support/sources.py): read its fields when needed, not once at import.
SERVICES = Services.from_env("TEST", "BENCH")
amqp_url = SERVICES.amqp_url
dsn_for = SERVICES.dsn_for


def isolated_vhost() -> contextlib.AbstractContextManager[str]:
    """A test's own vhost; its deletion does not hold up the next test."""
    return SERVICES.vhost("test", delete_in_background=True)


def http_get(port: int, path: str) -> tuple[int, str]:
    """GET http://127.0.0.1:PORT/PATH: its status and body, an error status included."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@contextlib.asynccontextmanager
async def serving_app(app: Any) -> AsyncIterator[str]:
    """An ASGI app served by uvicorn on a port of its own in this event loop: its base URL,
    until the block ends."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
