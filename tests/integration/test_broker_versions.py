"""What newer brokers than this machine's RabbitMQ 3.10 change, provoked here on purpose:

- RabbitMQ 4.x quorum queues have a delivery limit (20 by default) and drop a message past
  it unless the queue has a dead-letter target: vbapi.requests dead-letters to vbapi.dead
  (a queue argument; for a queue of an earlier version, the documented policy);
- RabbitMQ 3.13 and later stop counting client republishes in ``x-death``: the worker
  never reads it;
- a vhost whose default queue type is quorum (deploy/k8s) must not turn vbapi.dead into a
  quorum queue: the `dlq` commands need a classic one.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest
from structlog.testing import capture_logs

from tests.integration.test_topology import queue_types
from tests.support import samples
from tests.support.configs import make_settings, write_settings
from tests.support.operations_support import (
    channel_on,
    dead_letter_queue,
    put_dead_letters,
    run_cli,
)
from tests.support.paths import DOCS
from tests.support.producer import Producer
from tests.support.reliability_support import broker_channel
from tests.support.running import running
from tests.support.services import SERVICES, amqp_url, unique
from tests.support.waiting import wait_until
from worker.amqp import deadletters
from worker.amqp.topology import (
    DEAD_LETTER_POLICY,
    DEAD_QUEUE,
    QUORUM,
    REQUEST_EXCHANGE,
    REQUEST_QUEUE,
    declare_topology,
)

DELAYS_S = [0.2]


def set_request_policy(vhost: str, definition: dict[str, Any]) -> None:
    """A policy on vbapi.requests of the test's own vhost (3.10 knows ``delivery-limit``
    as a policy key, as 4.x does)."""
    SERVICES.broker.set_policy(vhost, "requests", f"^{REQUEST_QUEUE.replace('.', '[.]')}$",
                               definition, apply_to="queues")


def policy_applied(vhost: str) -> bool:
    return any(q.name == REQUEST_QUEUE and q.policy == "requests"
               for q in SERVICES.broker.queues(vhost))


async def reject_until_gone(vhost: str, limit: int = 10) -> int:
    """Take the request back, again and again, as a worker that keeps failing on it would
    (reject: what counts as a failed delivery on every version); returns how often it came."""
    async with broker_channel(vhost) as channel:
        requests = await channel.declare_queue(REQUEST_QUEUE, passive=True)
        for seen in range(limit):
            message = await requests.get(fail=False, timeout=5)
            if message is None:
                return seen
            await message.reject(requeue=True)
    raise AssertionError(f"still in {REQUEST_QUEUE} after {limit} deliveries")


async def publish_request(vhost: str, message_id: str) -> None:
    async with channel_on(amqp_url(vhost)) as channel:
        exchange = await channel.get_exchange(REQUEST_EXCHANGE)
        await exchange.publish(aio_pika.Message(
            orjson.dumps([samples.armor(1)]), message_id=message_id,
            headers={"path": samples.ARMOR_PATH, "vbasoftware-database": "demo"}),
            routing_key="ArmorCodeExCode")


async def test_a_message_over_the_broker_delivery_limit_is_dead_lettered(vhost: str) -> None:
    """A delivery limit of 1 (4.x: 20 by default) is passed: the broker moves the request
    to vbapi.dead instead of dropping it, and `dlq` lists and replays it like any other."""
    set_request_policy(vhost, {"delivery-limit": 1})
    async with broker_channel(vhost) as channel:
        await declare_topology(channel, DELAYS_S)
    await publish_request(vhost, "over-the-limit")
    assert await reject_until_gone(vhost) == 2

    settings = make_settings(vhost, {"demo": {"dsn": "postgresql://127.0.0.1/unused"}},
                             retry={"delays_s": DELAYS_S})
    [letter] = await wait_until(lambda: dead_letter_queue(settings).letters())
    assert letter.id == "over-the-limit" and letter.path == samples.ARMOR_PATH
    assert letter.error_status is None
    assert letter.error_title == "dead-lettered by the broker: delivery_limit"
    outcome = await dead_letter_queue(settings).replay(deadletters.Selection(all_=True))
    assert [d.id for d in outcome.done] == ["over-the-limit"] and not outcome.failed
    async with broker_channel(vhost) as channel:
        requests = await channel.declare_queue(REQUEST_QUEUE, passive=True)
        replayed = await requests.get(timeout=5)
    # As its producer sent it: none of the broker's dead-lettering headers.
    assert replayed.message_id == "over-the-limit"
    assert replayed.headers == {"path": samples.ARMOR_PATH, "vbasoftware-database": "demo",
                                "x-delivery-count": 0}


async def test_a_request_queue_of_an_earlier_version_gets_its_target_from_the_policy(
        vhost: str) -> None:
    """vbapi.requests declared without a dead-letter target is kept (its arguments cannot
    change), with a warning naming the policy; with the policy, nothing is dropped."""
    async with broker_channel(vhost) as channel:
        await channel.declare_queue(REQUEST_QUEUE, durable=True, arguments=QUORUM)
    async with broker_channel(vhost) as channel:
        with capture_logs() as logs:
            topology = await declare_topology(channel, DELAYS_S)
        assert topology.requests.name == REQUEST_QUEUE
    [warning] = [e for e in logs if e["log_level"] == "warning"]
    assert warning["queue"] == REQUEST_QUEUE
    assert json.dumps(DEAD_LETTER_POLICY) in warning["advice"]
    assert "x-dead-letter-exchange" not in queue_types(vhost)[REQUEST_QUEUE][1]

    # The policy docs/deployment.md gives, with a delivery limit of 1 in the same
    # definition (one policy applies to a queue at a time).
    assert json.dumps(DEAD_LETTER_POLICY) in (DOCS / "deployment.md").read_text()
    set_request_policy(vhost, {**DEAD_LETTER_POLICY, "delivery-limit": 1})
    await wait_until(lambda: policy_applied(vhost), timeout_s=10, interval_s=0.2)
    await publish_request(vhost, "kept-queue")
    assert await reject_until_gone(vhost) == 2
    async with broker_channel(vhost) as channel:
        dead = await channel.declare_queue(DEAD_QUEUE, passive=True)
        message = await dead.get(timeout=5)
    assert message.message_id == "kept-queue"
    assert (message.headers or {})["x-first-death-reason"] == "delivery_limit"


async def test_poison_counting_ignores_x_death(vhost: str, dsn: str, producer: Producer) -> None:
    """x-death, which RabbitMQ 3.13 and later no longer count for republished copies, is
    neither read nor trusted: a batch carrying a huge one is a first delivery like any
    other, and the worker's own retries are counted in x-upsert-attempts."""
    settings = make_settings(vhost, {"demo": {"dsn": dsn}}, retry={"max_deliveries": 1})
    death = [{"count": 99, "reason": "rejected", "queue": REQUEST_QUEUE, "exchange": "",
              "routing-keys": [REQUEST_QUEUE]}]
    async with running(settings):
        reply = await producer.call(samples.ARMOR_PATH, [samples.armor(1)],
                                    headers={"x-death": death, "x-first-death-reason": "x"})
    assert reply.status == 207 and reply.body["data"][0]["status"] == 201


@contextlib.contextmanager
def quorum_default_vhost() -> Iterator[str]:
    """A vhost whose default queue type is quorum, as deploy/k8s/rabbitmq.yaml makes it."""
    name = unique("test_qq")
    broker = SERVICES.broker
    broker.add_vhost(name, default_queue_type="quorum")
    try:
        broker.set_permissions(name, SERVICES.amqp_user)
        yield name
    finally:
        broker.delete_vhost(name, wait=False)


async def test_dlq_commands_in_a_vhost_whose_default_queue_type_is_quorum(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with quorum_default_vhost() as vhost:
        async with broker_channel(vhost) as channel:
            await declare_topology(channel, DELAYS_S)
            await channel.declare_queue("probe", durable=True)  # no type: the default
        types = queue_types(vhost)
        assert types["probe"][0] == "quorum"
        # Declared a classic queue explicitly, whatever the vhost's default.
        assert types[DEAD_QUEUE][0] == "classic"

        url = amqp_url(vhost)
        settings = make_settings(vhost, {"demo": {"dsn": "postgresql://127.0.0.1/unused"}})
        config = str(write_settings(tmp_path / "worker.toml", settings))
        await put_dead_letters(url, 300)
        for _ in range(2):  # a hold puts every dead letter back in place
            code, out, _ = await run_cli(["dlq", "list", "--json", "--config", config], capsys)
            assert code == 0
            assert [r["id"] for r in orjson.loads(out)] == [f"act-{n:05d}" for n in range(300)]
        code, out, _ = await run_cli(["dlq", "show", "act-00007", "--config", config], capsys)
        assert code == 0 and orjson.loads(out)["properties"]["message_id"] == "msg-00007"
        code, out, err = await run_cli(["dlq", "replay", "--id", "act-00007", "act-00003",
                                        "--config", config], capsys)
        assert code == 0 and "replayed 2, failed 0" in out, err
        code, out, _ = await run_cli(["dlq", "purge", "--yes", "--id", "act-00000",
                                      "--config", config], capsys)
        assert code == 0 and "purged 1" in out
        left = await dead_letter_queue(settings).letters()
        assert [d.id for d in left] == [f"act-{n:05d}" for n in range(300)
                                        if n not in (0, 3, 7)]
        async with broker_channel(vhost) as channel:
            requests = await channel.declare_queue(REQUEST_QUEUE, passive=True)
            assert requests.declaration_result.message_count == 2
