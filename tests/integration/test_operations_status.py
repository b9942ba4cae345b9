"""``status`` over AMQP, and the worker's /metrics, /healthz, /readyz scraped over HTTP."""

from __future__ import annotations

import asyncio
import base64
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.configs import make_settings, write_settings
from tests.support.operations_support import put_dead_letters, run_cli
from tests.support.producer import Producer
from tests.support.running import running
from tests.support.samples import benefit
from tests.support.services import amqp_url, free_port, http_get
from worker.settings import Settings


async def test_status_reports_queues_consumers_and_dead_letters(
        settings: Settings, producer: Producer, vhost: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    config = str(write_settings(tmp_path / "worker.toml", settings))
    async with running(settings):
        await put_dead_letters(amqp_url(vhost), 3, lambda n: 503 if n == 1 else 404)
        code, out, _ = await run_cli(["status", "--json", "--config", config], capsys)
        assert code == 0
        report = orjson.loads(out)
        queues = {q["name"]: q for q in report["queues"]}
        assert queues["vbapi.requests"] == {"name": "vbapi.requests", "exists": True,
                                            "ready": 0, "unacknowledged": None,
                                            "consumers": 1}
        assert queues["vbapi.dead"]["ready"] == 3 and queues["vbapi.dead"]["consumers"] == 0
        assert set(queues) == {"vbapi.requests", "vbapi.replies", "vbapi.dead",
                               "vbapi.retry.0.2s", "vbapi.retry.0.4s"}
        # No management plugin on this broker: unknown, and said so.
        assert report["unacknowledged_source"].startswith("unknown: AMQP does not report")
        assert report["dead_letters"] == {"total": 3, "by_status": {"404": 2, "503": 1}}

        code, out, _ = await run_cli(["status", "--config", config], capsys)
        assert code == 0
        assert "vbapi.requests" in out
        assert "dead letters: 3 (by error status: 404: 2, 503: 1)" in out
    # The worker gone, its queue has no consumer; the dead letters are all still there.
    code, out, _ = await run_cli(["status", "--json", "--config", config], capsys)
    queues = {q["name"]: q for q in orjson.loads(out)["queues"]}
    assert queues["vbapi.requests"]["consumers"] == 0 and queues["vbapi.dead"]["ready"] == 3


async def _fake_management_api(vhost: str, seen: list[str]) -> asyncio.Server:
    """A stand-in for RabbitMQ's management API (the plugin is not enabled on the test
    broker, and enabling it would change the shared service): answers /api/queues/VHOST."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        seen.append(head)
        body = orjson.dumps([{"name": "vbapi.requests", "messages_unacknowledged": 7}])
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                     + body)
        await writer.drain()
        writer.close()
    return await asyncio.start_server(serve, "127.0.0.1", 0)


async def test_status_takes_unacknowledged_from_the_management_api(
        vhost: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[str] = []
    server = await _fake_management_api(vhost, seen)
    port = server.sockets[0].getsockname()[1]
    settings = make_settings(
        vhost, {}, amqp={"management_url": f"http://ops:s3cret@127.0.0.1:{port}"})
    config = str(write_settings(tmp_path / "worker.toml", settings))
    async with server:
        code, out, _ = await run_cli(["status", "--json", "--config", config], capsys)
    assert code == 0
    report = orjson.loads(out)
    assert report["unacknowledged_source"] == f"management API at http://127.0.0.1:{port}"
    assert report["queues"][0]["name"] == "vbapi.requests"
    # The queues do not exist in this fresh vhost: reported missing, not invented.
    assert report["queues"][0]["exists"] is False
    assert f"GET /api/queues/{vhost}?columns=name,messages_unacknowledged" in seen[0]
    assert "Basic " + base64.b64encode(b"ops:s3cret").decode() in seen[0]




def _sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def test_metrics_and_probes_are_served(vhost: str, dsn: str, producer: Producer) -> None:
    port = free_port()
    settings = make_settings(vhost, {"demo": {"dsn": dsn}},
                             metrics={"host": "127.0.0.1", "port": port})
    async with running(settings) as worker:
        assert worker.health is not None and worker.health.port == port
        status, before = await asyncio.to_thread(http_get, port, "/metrics")
        assert status == 200
        reply = await producer.call("/benefits-batch", [benefit("M1"), benefit("M2")])
        assert reply.status == 207
        _, after = await asyncio.to_thread(http_get, port, "/metrics")
        labels = {"entity": "Benefit", "database": "demo"}
        assert (_sample(after, "upsert_batches_total", outcome="answered", **labels)
                - _sample(before, "upsert_batches_total", outcome="answered", **labels)) == 1
        assert (_sample(after, "upsert_items_total", status="201", **labels)
                - _sample(before, "upsert_items_total", status="201", **labels)) == 2
        for histogram in ("upsert_batch_latency_seconds_count", "upsert_db_write_seconds_count",
                          "upsert_batch_items_count"):
            assert _sample(after, histogram) > _sample(before, histogram)
        assert _sample(after, "upsert_broker_connected") == 1
        assert _sample(after, "upsert_database_connected", database="demo") == 1
        assert "upsert_batches_in_flight" in after
        assert await asyncio.to_thread(http_get, port, "/healthz") == (200, "alive\n")
        assert await asyncio.to_thread(http_get, port, "/readyz") == (200, "ready\n")
        assert (await asyncio.to_thread(http_get, port, "/nope"))[0] == 404
    # Stopped: nothing listens any more.
    with pytest.raises(urllib.error.URLError):
        await asyncio.to_thread(http_get, port, "/healthz")


async def test_not_ready_while_a_configured_database_is_unreachable(vhost: str, dsn: str) -> None:
    port, closed = free_port(), free_port()
    settings = make_settings(
        vhost, {"demo": {"dsn": dsn}, "down": {"dsn": f"postgresql://127.0.0.1:{closed}/x"}},
        metrics={"host": "127.0.0.1", "port": port})
    async with running(settings):
        assert await asyncio.to_thread(http_get, port, "/healthz") == (200, "alive\n")
        status, body = await asyncio.to_thread(http_get, port, "/readyz")
        assert status == 503 and body == "not ready: database down unreachable\n"
        _, metrics = await asyncio.to_thread(http_get, port, "/metrics")
        assert _sample(metrics, "upsert_database_connected", database="down") == 0
