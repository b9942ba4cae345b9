"""deploy/k8s's operator objects: the broker cluster, its users and their permissions (the
gateway's impersonator tag included), and the database cluster."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from tests.support.deploy_support import (
    ROOT,
    all_secrets,
    container_env,
    k8s_objects,
    k8s_process_settings,
    pod_of,
    rabbitmq_conf,
)
from worker.amqp.topology import (
    DEAD_QUEUE,
    REPLY_EXCHANGE,
    REPLY_QUEUE,
    REQUEST_EXCHANGE,
    REQUEST_QUEUE,
    retry_queue_name,
    worker_queue_names,
)
from worker.settings import RetrySettings

DEFAULT_EXCHANGE = "amq.default"  # the name RabbitMQ checks permissions on for ""


def permission_of(objects: dict[str, dict[str, Any]], user: str) -> dict[str, Any]:
    """The Permission of a broker user, by its User object's name or by its own name."""
    [spec] = [o["spec"] for o in objects.values() if o["kind"] == "Permission"
              and user in (o["spec"].get("user"), o["spec"].get("userReference", {}).get("name"))]
    return dict(spec)


def allows(permission: dict[str, Any], kind: str, resource: str) -> bool:
    return re.search(permission["permissions"][kind], resource) is not None


def user_of_secret(objects: dict[str, dict[str, Any]], secret: str) -> str:
    """The User object whose credentials a Secret holds (generated, or imported)."""
    [name] = [o["metadata"]["name"] for o in objects.values() if o["kind"] == "User" and secret
              in (o["metadata"]["name"] + "-user-credentials",
                  o["spec"].get("importCredentialsSecret", {}).get("name"))]
    return str(name)


def test_workers_may_use_their_whole_topology(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    objects = k8s_objects()
    settings, _ = k8s_process_settings("Deployment/upsert-worker", monkeypatch, tmp_path)
    [url] = settings.amqp.urls
    refs = {item["name"]: item["valueFrom"]["secretKeyRef"]["name"] for item in
            pod_of(objects["Deployment/upsert-worker"])[1]["env"] if "valueFrom" in item}
    permission = permission_of(objects, user_of_secret(objects, refs["AMQP_USERNAME"]))
    assert permission["vhost"] == unquote(urlsplit(url).path[1:])
    names = [REQUEST_EXCHANGE, REPLY_EXCHANGE, *worker_queue_names(settings.retry.delays_s)]
    for kind in ("configure", "write", "read"):
        assert all(allows(permission, kind, name) for name in names), kind
    assert allows(permission, "write", DEFAULT_EXCHANGE)  # replies, retries, dead letters


def test_gateway_may_publish_for_producers_and_nothing_more(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    objects = k8s_objects()
    settings, env = k8s_process_settings("Deployment/upsert-gateway", monkeypatch, tmp_path)
    permission = permission_of(objects, env["AMQP_USERNAME"])
    [url] = settings.amqp.urls
    assert permission["vhost"] == unquote(urlsplit(url).path[1:])
    # Batches to vbapi; the impersonation probe at start to the default exchange.
    assert allows(permission, "write", REQUEST_EXCHANGE)
    assert allows(permission, "write", DEFAULT_EXCHANGE)
    others = [REPLY_EXCHANGE, REQUEST_QUEUE, REPLY_QUEUE, DEAD_QUEUE, retry_queue_name(1)]
    assert not any(allows(permission, "write", name) for name in others)
    assert not any(allows(permission, kind, name) for kind in ("configure", "read")
                   for name in [REQUEST_EXCHANGE, *others])


def test_keda_may_read_the_request_queue_only() -> None:
    objects = k8s_objects()
    auth = objects["TriggerAuthentication/upsert-worker-rabbitmq"]["spec"]
    [secret] = {ref["name"] for ref in auth["secretTargetRef"]}
    permission = permission_of(objects, user_of_secret(objects, secret))
    [trigger] = objects["ScaledObject/upsert-worker"]["spec"]["triggers"]
    assert permission["vhost"] == unquote(urlsplit(trigger["metadata"]["host"]).path[1:])
    assert allows(permission, "read", trigger["metadata"]["queueName"])
    names = [REQUEST_EXCHANGE, REPLY_EXCHANGE, DEFAULT_EXCHANGE, REPLY_QUEUE, DEAD_QUEUE]
    assert not any(allows(permission, kind, name) for kind in ("configure", "write", "read")
                   for name in names)


def test_every_producer_is_a_declared_broker_user_and_has_a_gateway_key() -> None:
    objects = k8s_objects()
    secrets = all_secrets(objects)
    config = tomllib.loads(objects["ConfigMap/upsert-worker"]["data"]["worker.toml"])
    producers = {p for db in config["databases"].values() for p in db.get("producers", [])}
    assert producers
    api_keys = json.loads(secrets["upsert-gateway"]["api-keys"])
    for producer in producers:
        [user] = [o for o in objects.values() if o["kind"] == "User"
                  and secrets.get(o["spec"].get("importCredentialsSecret", {}).get("name"),
                                  {}).get("username") == producer]
        permission = permission_of(objects, user["metadata"]["name"])
        assert allows(permission, "write", REQUEST_EXCHANGE)
        assert producer in api_keys


class _ManagementApi(BaseHTTPRequestHandler):
    calls: ClassVar[list[tuple[str, str, str, bytes]]] = []

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.calls.append((self.command, self.path, self.headers["Authorization"], body))
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_gateway_broker_user_job_declares_the_impersonator_tag(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The Job's script, run as its pod runs it, against a stand-in management API."""
    objects = k8s_objects()
    _, gateway_env = k8s_process_settings("Deployment/upsert-gateway", monkeypatch, tmp_path)
    _, container = pod_of(objects["Job/upsert-gateway-broker-user"])
    env = container_env(container, all_secrets(objects))
    management = urlsplit(env["MANAGEMENT_URL"])
    assert (management.hostname, management.port) == ("rabbitmq.vbapi.svc", 15672)
    _ManagementApi.calls.clear()
    server = HTTPServer(("127.0.0.1", 0), _ManagementApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env["MANAGEMENT_URL"] = f"http://127.0.0.1:{server.server_port}"
        command = container["command"]
        assert command[:2] == ["python", "-c"]
        done = subprocess.run([sys.executable, *command[1:]], env={**os.environ, **env},
                              capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr
    [(method, path, authorization, body)] = _ManagementApi.calls
    admin = all_secrets(objects)["rabbitmq-default-user"]
    assert authorization == "Basic " + base64.b64encode(
        f"{admin['username']}:{admin['password']}".encode()).decode()
    assert (method, unquote(path)) == ("PUT", f"/api/users/{gateway_env['AMQP_USERNAME']}")
    declared = json.loads(body)
    assert declared["password"] == gateway_env["AMQP_PASSWORD"]
    assert "impersonator" in declared["tags"].split(",")
    # And no User object claims that user: the Operator would take the tag away again.
    assert not [o for o in objects.values() if o["kind"] == "User"
                and o["metadata"]["name"] == gateway_env["AMQP_USERNAME"]]


def test_rabbitmq_cluster_has_three_nodes_and_the_worker_vhost_quorum_queues() -> None:
    objects = k8s_objects()
    cluster = objects["RabbitmqCluster/rabbitmq"]["spec"]
    assert cluster["replicas"] == 3
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert cluster["image"] == compose["services"]["rabbitmq"]["image"]
    config = rabbitmq_conf(cluster["rabbitmq"]["additionalConfig"])
    assert config["cluster_partition_handling"] == "pause_minority"
    [spread] = cluster["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    [vhost] = [o["spec"] for o in objects.values() if o["kind"] == "Vhost"]
    assert vhost["defaultQueueType"] == "quorum"
    for obj in objects.values():
        if obj["apiVersion"] == "rabbitmq.com/v1beta1" and obj["kind"] != "RabbitmqCluster":
            assert obj["spec"]["rabbitmqClusterReference"] == {"name": "rabbitmq"}
            assert obj["spec"].get("vhost", vhost["name"]) == vhost["name"]


def test_retry_queues_dead_letter_at_least_once() -> None:
    """The policy matches every retry queue the worker declares, in production's
    configuration and by default, and no other of its queues."""
    objects = k8s_objects()
    policy = objects["Policy/vbapi-retry-at-least-once"]["spec"]
    assert policy["applyTo"] == "quorum_queues"
    # The broker accepts at-least-once dead-lettering only with overflow reject-publish.
    assert policy["definition"] == {"dead-letter-strategy": "at-least-once",
                                    "overflow": "reject-publish"}
    config = tomllib.loads(objects["ConfigMap/upsert-worker"]["data"]["worker.toml"])
    delays = config["retry"]["delays_s"] + RetrySettings().delays_s
    pattern = re.compile(policy["pattern"])
    assert all(pattern.search(retry_queue_name(d)) for d in delays)
    assert not any(pattern.search(q) for q in (REQUEST_QUEUE, REPLY_QUEUE, DEAD_QUEUE))


def test_postgres_cluster_commits_to_a_synchronous_standby() -> None:
    objects = k8s_objects()
    cluster = objects["Cluster/postgres"]["spec"]
    assert cluster["instances"] == 3
    # One way to say it: the old minSyncReplicas/maxSyncReplicas would fall back to
    # asynchronous replication with no standby left, which `required` refuses.
    assert not {"minSyncReplicas", "maxSyncReplicas"} & set(cluster)
    sync = cluster["postgresql"]["synchronous"]
    assert sync["method"] in ("any", "first")
    assert 1 <= sync["number"] < cluster["instances"]
    assert sync["dataDurability"] == "required"
    assert cluster["postgresql"]["parameters"]["synchronous_commit"] in ("on", "remote_apply")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["postgres"]["image"].split(":")[1] == \
        cluster["imageName"].split(":")[1]
    assert cluster["affinity"]["podAntiAffinityType"] == "required"
