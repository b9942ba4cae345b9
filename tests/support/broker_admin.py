"""Administering the tests' RabbitMQ: one interface, two ways to reach the broker.

``Rabbitmqctl`` runs ``rabbitmqctl`` on this machine (the machine's own broker, the
default); ``ManagementApi`` talks to the management plugin's HTTP API (a broker elsewhere,
or in a container).  ``broker_admin()`` picks one from the settings: a management URL
(``TEST_AMQP_MANAGEMENT_URL``, ``http://user:password@host:15672``) means the HTTP API,
else ``rabbitmqctl``.  Neither the worker nor the tests need the management plugin unless
the settings name it.

What the HTTP API reports of connections and queue counts is as fresh as the broker's
statistics (``collect_statistics_interval``, 5 s unless configured): ``ManagementApi``
waits for a connection to be listed before it gives up on closing it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from base64 import b64encode
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit


@dataclass(frozen=True)
class Queue:
    """A queue as the broker lists it."""

    name: str
    type: str = "classic"
    arguments: dict[str, Any] = field(default_factory=dict)
    policy: str | None = None
    ready: int = 0
    unacknowledged: int = 0


@dataclass(frozen=True)
class Connection:
    """A client connection: what closes it (``id``), and its client properties as text
    (to look for a name in)."""

    id: str
    properties: str


class BrokerAdmin(ABC):
    """What the tests do to the broker besides AMQP: vhosts, users, policies, listing
    queues and closing connections."""

    @abstractmethod
    def add_vhost(self, name: str, *, default_queue_type: str | None = None) -> None: ...

    @abstractmethod
    def delete_vhost(self, name: str, *, wait: bool = True) -> None:
        """Delete ``name``; without ``wait``, in the background (a vhost takes a second)."""

    @abstractmethod
    def add_user(self, name: str, password: str) -> None: ...

    @abstractmethod
    def delete_user(self, name: str) -> None: ...

    @abstractmethod
    def set_user_tags(self, name: str, *tags: str) -> None: ...

    @abstractmethod
    def set_permissions(self, vhost: str, user: str, configure: str = ".*",
                        write: str = ".*", read: str = ".*") -> None: ...

    @abstractmethod
    def set_policy(self, vhost: str, name: str, pattern: str, definition: dict[str, Any],
                   *, apply_to: str = "all", priority: int = 0) -> None: ...

    @abstractmethod
    def clear_policy(self, vhost: str, name: str) -> None: ...

    @abstractmethod
    def queues(self, vhost: str) -> list[Queue]: ...

    @abstractmethod
    def connections(self, vhost: str) -> list[Connection]: ...

    @abstractmethod
    def close_connection(self, connection: Connection, reason: str) -> None: ...

    def queue(self, vhost: str, name: str) -> Queue:
        for queue in self.queues(vhost):
            if queue.name == name:
                return queue
        raise LookupError(f"no queue {name!r} in vhost {vhost!r}")

    def close_connections(self, vhost: str, name: str, reason: str) -> int:
        """Close the connections of ``vhost`` whose client properties name ``name`` (and
        only those); how many it closed."""
        closed = 0
        for connection in self.connections(vhost):
            if name in connection.properties:
                self.close_connection(connection, reason)
                closed += 1
        return closed

    def close_all_connections(self, vhost: str, reason: str) -> int:
        return self.close_connections(vhost, "", reason)


class Rabbitmqctl(BrokerAdmin):
    """``rabbitmqctl`` of this machine (``command`` may name another, or wrap it)."""

    def __init__(self, command: Sequence[str] = ("rabbitmqctl",)) -> None:
        self.command = list(command)

    def run(self, *args: str, background: bool = False) -> str:
        """``rabbitmqctl -q ARGS``: what it printed; in the ``background``, nothing (its
        output and failure ignored)."""
        command = [*self.command, "-q", *args]
        if background:
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return ""
        return subprocess.run(command, check=True, capture_output=True, text=True,
                              timeout=60).stdout

    def add_vhost(self, name: str, *, default_queue_type: str | None = None) -> None:
        self.run("add_vhost", name, *(["--default-queue-type", default_queue_type]
                                      if default_queue_type else []))

    def delete_vhost(self, name: str, *, wait: bool = True) -> None:
        self.run("delete_vhost", name, background=not wait)

    def add_user(self, name: str, password: str) -> None:
        self.run("add_user", name, password)

    def delete_user(self, name: str) -> None:
        self.run("delete_user", name)

    def set_user_tags(self, name: str, *tags: str) -> None:
        self.run("set_user_tags", name, *tags)

    def set_permissions(self, vhost: str, user: str, configure: str = ".*",
                        write: str = ".*", read: str = ".*") -> None:
        self.run("set_permissions", "-p", vhost, user, configure, write, read)

    def set_policy(self, vhost: str, name: str, pattern: str, definition: dict[str, Any],
                   *, apply_to: str = "all", priority: int = 0) -> None:
        self.run("set_policy", "-p", vhost, "--apply-to", apply_to, "--priority",
                 str(priority), name, pattern, json.dumps(definition))

    def clear_policy(self, vhost: str, name: str) -> None:
        self.run("clear_policy", "-p", vhost, name)

    def queues(self, vhost: str) -> list[Queue]:
        return queues_of_rabbitmqctl(self.run(
            "list_queues", "-p", vhost, "name", "type", "arguments", "policy",
            "messages_ready", "messages_unacknowledged", "--formatter", "json"))

    def connections(self, vhost: str) -> list[Connection]:
        # list_connections takes no -p: it lists every vhost's, so the vhost is a column
        # and filtered here (closing another test's connections would break that test).
        rows = self.run("list_connections", "-s", "pid", "vhost", "client_properties")
        return [Connection(pid, properties) for pid, host, properties
                in (line.split("\t", 2) for line in rows.splitlines() if line.count("\t") >= 2)
                if pid and host == vhost]

    def close_connection(self, connection: Connection, reason: str) -> None:
        self.run("close_connection", connection.id, reason)


def queues_of_rabbitmqctl(output: str) -> list[Queue]:
    """``list_queues ... --formatter json``: each argument as [name, AMQP type, value]."""
    return [Queue(name=row["name"], type=row.get("type") or "classic",
                  arguments={arg[0]: arg[-1] for arg in row.get("arguments") or []},
                  policy=row.get("policy") or None,
                  ready=int(row.get("messages_ready") or 0),
                  unacknowledged=int(row.get("messages_unacknowledged") or 0))
            for row in json.loads(output or "[]")]


class ManagementApi(BrokerAdmin):
    """The management plugin's HTTP API at ``url`` (``http://user:password@host:port``)."""

    def __init__(self, url: str, *, listed_within_s: float = 10.0) -> None:
        parts = urlsplit(url)
        host = (parts.hostname or "127.0.0.1") + (f":{parts.port}" if parts.port else "")
        self.base = urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))
        credentials = f"{parts.username or 'guest'}:{parts.password or 'guest'}"
        self.authorization = "Basic " + b64encode(credentials.encode()).decode()
        # How long a connection may take to show in the statistics before closing it fails.
        self.listed_within_s = listed_within_s

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> Any:
        """``METHOD /api/PATH`` (each part of ``path`` quoted by the caller); the decoded
        JSON answer, or None for an empty one."""
        request = urllib.request.Request(
            f"{self.base}/api/{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"authorization": self.authorization, "content-type": "application/json",
                     **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text = response.read()
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{method} /api/{path}: {e.code} {e.read()[:300]!r}") from e
        return json.loads(text) if text else None

    def add_vhost(self, name: str, *, default_queue_type: str | None = None) -> None:
        # RabbitMQ 3.10 reads "defaultqueuetype", later versions "default_queue_type".
        self.request("PUT", f"vhosts/{_q(name)}",
                     {"default_queue_type": default_queue_type,
                      "defaultqueuetype": default_queue_type} if default_queue_type else {})

    def delete_vhost(self, name: str, *, wait: bool = True) -> None:
        def delete() -> None:
            self.request("DELETE", f"vhosts/{_q(name)}")

        if wait:
            delete()
        else:  # not a daemon: the interpreter waits for it at exit
            threading.Thread(target=_quietly(delete), name=f"delete {name}").start()

    def add_user(self, name: str, password: str) -> None:
        self.request("PUT", f"users/{_q(name)}", {"password": password, "tags": ""})

    def delete_user(self, name: str) -> None:
        self.request("DELETE", f"users/{_q(name)}")

    def set_user_tags(self, name: str, *tags: str) -> None:
        # A PUT replaces the user: give its password hash back, or it loses its password.
        user = self.request("GET", f"users/{_q(name)}")
        self.request("PUT", f"users/{_q(name)}", {
            "password_hash": user["password_hash"],
            "hashing_algorithm": user["hashing_algorithm"], "tags": ",".join(tags)})

    def set_permissions(self, vhost: str, user: str, configure: str = ".*",
                        write: str = ".*", read: str = ".*") -> None:
        self.request("PUT", f"permissions/{_q(vhost)}/{_q(user)}",
                     {"configure": configure, "write": write, "read": read})

    def set_policy(self, vhost: str, name: str, pattern: str, definition: dict[str, Any],
                   *, apply_to: str = "all", priority: int = 0) -> None:
        self.request("PUT", f"policies/{_q(vhost)}/{_q(name)}",
                     {"pattern": pattern, "definition": definition, "apply-to": apply_to,
                      "priority": priority})

    def clear_policy(self, vhost: str, name: str) -> None:
        self.request("DELETE", f"policies/{_q(vhost)}/{_q(name)}")

    def queues(self, vhost: str) -> list[Queue]:
        return [Queue(name=row["name"], type=row.get("type") or "classic",
                      arguments=dict(row.get("arguments") or {}),
                      policy=row.get("policy") or None,
                      ready=int(row.get("messages_ready") or 0),
                      unacknowledged=int(row.get("messages_unacknowledged") or 0))
                for row in self.request("GET", f"queues/{_q(vhost)}")]

    def connections(self, vhost: str) -> list[Connection]:
        return [Connection(row["name"], json.dumps(row.get("client_properties") or {}))
                for row in self.request("GET", f"vhosts/{_q(vhost)}/connections")]

    def close_connection(self, connection: Connection, reason: str) -> None:
        self.request("DELETE", f"connections/{_q(connection.id)}", headers={"x-reason": reason})

    def close_connections(self, vhost: str, name: str, reason: str) -> int:
        # A new connection shows once the broker has emitted statistics for it.
        deadline = time.monotonic() + self.listed_within_s
        while (closed := super().close_connections(vhost, name, reason)) == 0:
            if time.monotonic() > deadline:
                return 0
            time.sleep(0.25)
        return closed


def _q(part: str) -> str:
    return quote(part, safe="")


def _quietly(action: Callable[[], Any]) -> Callable[[], None]:
    def run() -> None:
        try:
            action()
        except Exception:
            pass  # best effort, as rabbitmqctl in the background

    return run


def broker_admin(management_url: str | None, *,
                 which: Callable[[str], str | None] = shutil.which) -> BrokerAdmin:
    """The HTTP API if the settings give its URL, else ``rabbitmqctl`` of this machine; an
    error saying what to set when neither is there."""
    if management_url:
        return ManagementApi(management_url)
    rabbitmqctl = which("rabbitmqctl")
    if rabbitmqctl is None:
        raise RuntimeError("no way to administer the test broker: rabbitmqctl is not on PATH "
                           "and TEST_AMQP_MANAGEMENT_URL (http://user:password@host:15672, "
                           "the management plugin's API) is not set")
    return Rabbitmqctl([rabbitmqctl])
