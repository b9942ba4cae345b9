"""A three-node RabbitMQ cluster of the test's own on 127.0.0.1, as production runs it
(three nodes, quorum queues), to kill and restart nodes of; never the machine's shared
node, which is neither stopped, nor reconfigured, nor clustered with these: the nodes have
a cookie of their own, so that even a mistaken command could not reach it.

    with rabbit_cluster() as cluster:
        url = cluster.url(cluster.nodes[0])
        leader = cluster.leader("q")
        cluster.kill_9(leader)
        cluster.restart(leader)
        cluster.wait_healthy()
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aio_pika

from tests.support.faults.rabbit_node import RabbitNode, installed
from tests.support.faults.required import missing

BOOT_TIMEOUT_S = 90.0
VHOST = "/"  # the cluster is the test's alone: the default vhost serves


class RabbitCluster:
    """Three (``size``) nodes named ``vbt<random>-a@localhost`` ...: unique, since other
    test runs on the machine may run clusters of their own at the same time."""

    def __init__(self, size: int = 3) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="vbapi-faults-rmq-"))
        home = self.dir / "home"
        home.mkdir()
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)  # Erlang refuses a cookie file others can read
        prefix = f"vbt{secrets.token_hex(3)}"
        self.nodes = [RabbitNode(f"{prefix}-{chr(ord('a') + i)}", self.dir, home)
                      for i in range(size)]

    # --- lifecycle ---------------------------------------------------------------------

    def start(self, timeout_s: float = BOOT_TIMEOUT_S) -> None:
        """Boot every node at once, then join the others to the first, one at a time."""
        deadline = time.monotonic() + timeout_s
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.wait_booted(deadline)
        seed = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", seed.name)
            node.ctl("start_app")
        self.wait_healthy(max(deadline - time.monotonic(), 1))

    def stop(self) -> None:
        """Every node gone (SIGKILL: the data is thrown away), then the directory."""
        errors = []
        for node in self.nodes:
            try:
                node.stop()
            except Exception as exc:  # the other nodes must still go
                errors.append(exc)
        shutil.rmtree(self.dir, ignore_errors=True)
        if errors:
            raise errors[0]

    def node(self, name: str) -> RabbitNode:
        for node in self.nodes:
            if name in (node.name, node.short_name):
                return node
        raise LookupError(f"no node {name!r} in this cluster")

    def node_at(self, address: str) -> RabbitNode:
        """The node listening for AMQP at ``host:port`` (as the worker logs its node)."""
        port = int(address.rpartition(":")[2])
        for node in self.nodes:
            if node.amqp_port == port:
                return node
        raise LookupError(f"no node of this cluster listens at {address}")

    def running_nodes(self) -> list[RabbitNode]:
        return [n for n in self.nodes if n.beam_pid is not None]

    def url(self, node: RabbitNode) -> str:
        return node.url()

    def urls(self) -> list[str]:
        """One AMQP URL a node, in node order."""
        return [node.url() for node in self.nodes]

    # --- faults ------------------------------------------------------------------------

    def kill_9(self, node: RabbitNode) -> None:
        """SIGKILL to that node's Erlang VM (by its PID): what its peers and clients see of
        a machine that died."""
        node.kill_9()

    def restart(self, node: RabbitNode, timeout_s: float = BOOT_TIMEOUT_S) -> None:
        """Start a killed node again, with its data: it rejoins the cluster by itself."""
        node.start()
        node.wait_booted(time.monotonic() + timeout_s)

    # --- what the cluster says ---------------------------------------------------------

    def ctl_json(self, *args: str) -> Any:
        """``rabbitmqctl ARGS --formatter json`` on the first running node."""
        [node, *_] = self.running_nodes()
        return json.loads(node.ctl("-q", *args, "--formatter", "json"))

    def running_names(self) -> set[str]:
        """The nodes the cluster reports running."""
        status = self.ctl_json("cluster_status")
        return set(status["running_nodes"])

    def queue_info(self, queue: str) -> dict[str, Any]:
        """The queue's type, leader, members and online members, as the broker reports them."""
        rows = self.ctl_json("list_queues", "-p", VHOST, "name", "type", "leader", "members",
                             "online")
        for row in rows:
            if row["name"] == queue:
                return dict(row)
        raise LookupError(f"no queue {queue!r}")

    def queue_counts(self) -> dict[str, tuple[int, int]]:
        """Queue -> (ready, unacknowledged), as the broker reports them."""
        rows = self.ctl_json("list_queues", "-p", VHOST, "name", "messages_ready",
                             "messages_unacknowledged")
        return {row["name"]: (int(row["messages_ready"]), int(row["messages_unacknowledged"]))
                for row in rows}

    def leader(self, queue: str) -> RabbitNode:
        """The node that leads the quorum queue now."""
        return self.node(self.queue_info(queue)["leader"])

    def members(self, queue: str) -> list[RabbitNode]:
        return [self.node(name) for name in self.queue_info(queue)["members"]]

    def wait_healthy(self, timeout_s: float = 60.0, queues: tuple[str, ...] = ()) -> None:
        """Until every node runs in the cluster and each of ``queues`` has a leader and
        all its members online."""
        deadline = time.monotonic() + timeout_s
        wanted = {n.name for n in self.nodes}
        last: object = None
        while True:
            try:
                last = self.running_names()
                healthy = last == wanted
                for queue in queues if healthy else ():
                    last = info = self.queue_info(queue)
                    healthy = healthy and bool(info["leader"]) and (
                        set(info["online"]) == set(info["members"]) == wanted)
                if healthy:
                    return
            except (RuntimeError, LookupError, ValueError) as exc:
                last = exc  # a node still joining answers with an error
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster not healthy after {timeout_s} s: {last}\n"
                                   + "\n".join(n.log_tail(10) for n in self.nodes))
            time.sleep(0.5)

    def wait_new_leader(self, queue: str, old: RabbitNode, timeout_s: float = 30.0) -> RabbitNode:
        """Until a node other than ``old`` leads the queue (after ``old`` was killed)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                leader = self.leader(queue)
                if leader is not old:
                    return leader
            except (RuntimeError, LookupError, ValueError):
                pass  # no leader yet: the election is under way
            if time.monotonic() > deadline:
                raise TimeoutError(f"{queue}: no leader but {old.name} after {timeout_s} s")
            time.sleep(0.2)


async def declare_quorum_queue(url: str, queue: str) -> None:
    """A durable quorum queue on the cluster: by default, a member on every node (three),
    its first leader the node of ``url`` (the leader locator is client-local)."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
    finally:
        await connection.close()


@contextmanager
def rabbit_cluster(size: int = 3) -> Iterator[RabbitCluster]:
    """A started, healthy cluster; every node killed and its data removed afterwards, also
    when starting failed half-way."""
    if not installed():
        missing("RabbitMQ server (rabbitmq-server, rabbitmqctl)")
    cluster = RabbitCluster(size)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
