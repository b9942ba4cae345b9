"""Where a test session's PostgreSQL and RabbitMQ come from, each on its own:

1. the ``TEST_*`` settings (tests/support/services.py), if any are given for it;
2. else this machine's, at the local defaults;
3. where the one that applies does not answer and Docker is available, a container that
   testcontainers starts for the session (and removes after it): ``TEST_POSTGRES_IMAGE``
   (postgres:16) and ``TEST_RABBITMQ_IMAGE`` (rabbitmq:3.13-management, administered
   through its management HTTP API), as docker-compose.yml runs them;
4. else the session fails, saying what it tried.

:func:`choose_source` is the decision, without probing anything (tested in tests/unit);
:func:`session_services` probes, starts what it must and points ``SERVICES`` at it.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Literal
from urllib.parse import urlsplit

from tests.support.services import Services

POSTGRES = "PostgreSQL"
RABBITMQ = "RabbitMQ"
# The settings that say where each service is (tests/support/services.py), under each prefix.
SETTINGS = {POSTGRES: ("PG_DSN",),
            RABBITMQ: ("AMQP_HOST", "AMQP_PORT", "AMQP_USER", "AMQP_PASSWORD",
                       "AMQP_MANAGEMENT_URL")}
PREFIXES = ("TEST", "BENCH")

Origin = Literal["settings", "local", "container"]


class ServicesUnavailable(RuntimeError):
    """Neither the settings' (or local) service answers nor can a container be started."""


@dataclass(frozen=True)
class Source:
    """Where one service comes from, and why."""

    service: str
    origin: Origin
    reason: str


def choose_source(service: str, *, configured: bool, answers: bool, docker: bool) -> Source:
    """The settings' service if any setting names it, else the local one, if it answers;
    else a container if Docker is there; else :class:`ServicesUnavailable`."""
    where = ("at the address the TEST_* settings give" if configured
             else "at the local default address")
    if answers:
        return Source(service, "settings" if configured else "local", f"it answers {where}")
    if docker:
        return Source(service, "container", f"nothing answers {where}; Docker is "
                                             f"available, testcontainers starts it")
    names = ", ".join(f"TEST_{name}" for name in SETTINGS[service])
    raise ServicesUnavailable(
        f"{service}: nothing answers {where}, and there is no Docker to start it in "
        f"(set {names}, start it, or make Docker available)")


def configured(service: str, env: Mapping[str, str]) -> bool:
    """Whether the environment says where ``service`` is."""
    return any(f"{prefix}_{name}" in env for prefix in PREFIXES for name in SETTINGS[service])


def answers(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """Whether something accepts a TCP connection there."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def pg_address(dsn: str) -> tuple[str, int]:
    parts = urlsplit(dsn)
    return parts.hostname or "127.0.0.1", parts.port or 5432


def docker_available() -> bool:
    """Whether a Docker daemon answers (testcontainers' own way to find it)."""
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def start_postgres(stack: contextlib.ExitStack) -> str:
    """A PostgreSQL container for the session: the DSN of its superuser."""
    from testcontainers.community.postgres import PostgresContainer

    container = PostgresContainer(os.environ.get("TEST_POSTGRES_IMAGE", "postgres:16"),
                                  username="root", password="test", dbname="postgres",
                                  driver=None)
    container.with_command("postgres -c max_connections=200 -c fsync=off")
    stack.enter_context(container)
    return str(container.get_connection_url(driver=None))


def start_rabbitmq(stack: contextlib.ExitStack) -> dict[str, str | int]:
    """A RabbitMQ container with the management plugin, for the session: the settings of
    :class:`Services` that reach it (guest may connect from afar in the official image)."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    container = DockerContainer(os.environ.get("TEST_RABBITMQ_IMAGE",
                                               "rabbitmq:3.13-management"))
    container.with_exposed_ports(5672, 15672)
    stack.enter_context(container)
    wait_for_logs(container, "Server startup complete", timeout=180)
    host = container.get_container_host_ip()
    return {"amqp_host": host, "amqp_port": int(container.get_exposed_port(5672)),
            "amqp_user": "guest", "amqp_password": "guest",
            "management_url": f"http://guest:guest@{host}:{container.get_exposed_port(15672)}"}


@contextlib.contextmanager
def session_services(services: Services, env: Mapping[str, str] = os.environ, *,
                     probe: Callable[[str, int], bool] = answers,
                     docker: Callable[[], bool] = docker_available,
                     start_pg: Callable[[contextlib.ExitStack], str] = start_postgres,
                     start_broker: Callable[[contextlib.ExitStack], dict[str, str | int]]
                     = start_rabbitmq) -> Iterator[list[Source]]:
    """Choose each service's source, start the containers needed, and point ``services``
    at them until the block ends (then the containers go, and ``services`` is as it was)."""
    pg_up = probe(*pg_address(services.pg_dsn))
    broker_up = probe(services.amqp_host, services.amqp_port)
    has_docker = (pg_up and broker_up) or docker()
    sources = [choose_source(POSTGRES, configured=configured(POSTGRES, env), answers=pg_up,
                             docker=has_docker),
               choose_source(RABBITMQ, configured=configured(RABBITMQ, env),
                             answers=broker_up, docker=has_docker)]
    before = replace(services)
    with contextlib.ExitStack() as stack:
        chosen = services
        if sources[0].origin == "container":
            chosen = replace(chosen, pg_dsn=start_pg(stack))
        if sources[1].origin == "container":
            chosen = replace(chosen, **start_broker(stack))  # type: ignore[arg-type]
        services.use(chosen)
        try:
            yield sources
        finally:
            services.use(before)
