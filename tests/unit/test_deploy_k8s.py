"""deploy/k8s works as written: every process loads its configuration as its pod gets it,
and what the manifests name (Services, Secrets, broker users, connections, memory) is
there and fits (no cluster here: the files are read as the platform reads them)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from tests.support.deploy_support import (
    K8S,
    ROOT,
    all_secrets,
    container_env,
    example_secrets,
    gateway_probe_status,
    k8s_objects,
    k8s_process_settings,
    kustomization,
    pod_of,
    quantity,
    secret_refs,
    worker_probe_status,
)
from tests.support.paths import DOCS, README
from worker.http.gateway import check_exposure
from worker.settings import LimitsSettings

WORKLOADS = ["Deployment/upsert-worker", "Deployment/upsert-gateway",
             "Job/upsert-worker-migrate", "Job/upsert-gateway-broker-user"]
PROCESSES = WORKLOADS[:3]  # those that run upsert-worker
# BENCHMARKS.md: the worker's peak memory with the defaults and 10,000-item batches is
# at most this (measured 167-185 MB), with max_bytes_in_progress at its default.
MEASURED_PEAK_BYTES = 250 * 10**6


def compose_image() -> str:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return str(compose["services"]["worker"]["image"])


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    listed = set(kustomization()["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present - {"secret.example.yaml"}
    assert {o["kind"] for o in k8s_objects().values()} >= {"Namespace", "Job", "User"}


@pytest.mark.parametrize("name", PROCESSES)
def test_each_process_loads_its_configuration_as_its_pod_gets_it(
        name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings, env = k8s_process_settings(name, monkeypatch, tmp_path)
    secrets = all_secrets(k8s_objects())
    if name == "Deployment/upsert-gateway":
        check_exposure(settings.gateway)  # it would refuse to start otherwise
        assert settings.gateway.host_port[0] == "0.0.0.0"
        assert settings.gateway.api_keys == yaml.safe_load(
            secrets["upsert-gateway"]["api-keys"])
        assert settings.amqp.signing_key is None  # nothing to sign: it republishes nothing
    else:
        assert set(settings.databases) == {"demo"}
        assert settings.amqp.signing_key is not None
        assert settings.amqp.signing_key.get_secret_value() == secrets[
            "upsert-worker"]["signing-key"]
    if name != "Job/upsert-worker-migrate":  # which connects to the databases only
        [url] = settings.amqp.urls
        user = unquote(urlsplit(url).username or "")
        password = unquote(urlsplit(url).password or "")
        assert (user, password) == (env["AMQP_USERNAME"], env["AMQP_PASSWORD"])


def test_gateway_and_workers_agree_on_what_they_share(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    worker, _ = k8s_process_settings("Deployment/upsert-worker", monkeypatch, tmp_path)
    gateway, _ = k8s_process_settings("Deployment/upsert-gateway", monkeypatch, tmp_path)
    assert gateway.retry.delays_s == worker.retry.delays_s
    assert gateway.limits.max_body_bytes == worker.limits.max_body_bytes
    [worker_url], [gateway_url] = worker.amqp.urls, gateway.amqp.urls
    assert urlsplit(worker_url).hostname == urlsplit(gateway_url).hostname
    assert urlsplit(worker_url).path == urlsplit(gateway_url).path


@pytest.mark.parametrize("name", ["Deployment/upsert-worker", "Deployment/upsert-gateway"])
def test_probes_and_ports_are_the_codes(name: str, monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    settings, _ = k8s_process_settings(name, monkeypatch, tmp_path)
    deployment = k8s_objects()[name]
    pod, container = pod_of(deployment)
    if name == "Deployment/upsert-worker":
        port, probe = settings.metrics.port, worker_probe_status
    else:
        port, probe = settings.gateway.host_port[1], gateway_probe_status
    [declared] = container["ports"]
    assert declared["containerPort"] == port
    for kind, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert container[kind]["httpGet"] == {"path": path, "port": declared["name"]}
        assert probe(settings, path) != 404
    assert probe(settings, "/metrics") == 200
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_gateway_service_targets_the_gateway_port() -> None:
    objects = k8s_objects()
    service = objects["Service/upsert-gateway"]["spec"]
    _, container = pod_of(objects["Deployment/upsert-gateway"])
    assert service["selector"] == objects["Deployment/upsert-gateway"]["spec"]["selector"][
        "matchLabels"]
    assert {p["targetPort"] for p in service["ports"]} == {p["name"] for p in container["ports"]}


def services(objects: dict[str, dict[str, Any]]) -> set[str]:
    """The Services these objects make: their own, and the operators' for theirs."""
    names = set()
    for obj in objects.values():
        name = obj["metadata"]["name"]
        if obj["kind"] == "Service":
            names.add(name)
        elif obj["kind"] == "RabbitmqCluster":
            names |= {name, f"{name}-nodes"}
        elif obj["kind"] == "Cluster":
            names |= {f"{name}-rw", f"{name}-ro", f"{name}-r"}
    return names


def host_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> set[str]:
    """Every host a process or KEDA is told to reach."""
    objects = k8s_objects()
    hosts = set()
    for name in WORKLOADS:
        env = container_env(pod_of(objects[name])[1], all_secrets(objects))
        hosts |= {urlsplit(v).hostname or "" for v in env.values() if "://" in v}
    for name in PROCESSES:
        settings, _ = k8s_process_settings(name, monkeypatch, tmp_path)
        if name != "Job/upsert-worker-migrate":  # the databases only
            hosts |= {urlsplit(u).hostname or "" for u in settings.amqp.urls}
        if name != "Deployment/upsert-gateway":  # the broker only
            hosts |= {urlsplit(d.dsn.get_secret_value()).hostname or ""
                      for d in settings.databases.values()}
    for trigger in objects["ScaledObject/upsert-worker"]["spec"]["triggers"]:
        hosts.add(urlsplit(trigger["metadata"]["host"]).hostname or "")
    return hosts


def test_services_are_named_in_the_namespace_they_are_in(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    namespace = kustomization()["namespace"]
    objects = k8s_objects()
    assert objects[f"Namespace/{namespace}"]
    hosts = host_names(monkeypatch, tmp_path)
    assert hosts
    for host in hosts:
        service, ns, svc = host.split(".")
        assert (ns, svc) == (namespace, "svc"), host
        assert service in services(objects), host
    for doc_namespace in {s["metadata"]["namespace"] for s in yaml.safe_load_all(
            (K8S / "secret.example.yaml").read_text())}:
        assert doc_namespace == namespace


def test_images_and_pull_policy_work_with_a_locally_built_image() -> None:
    image = compose_image()  # what `docker compose build` and the documented build tag
    name, tag = image.rsplit(":", 1)
    assert tag != "latest"  # :latest means imagePullPolicy Always: a local image is pulled
    [entry] = kustomization()["images"]
    assert entry == {"name": name, "newTag": tag}
    for workload in WORKLOADS:
        _, container = pod_of(k8s_objects()[workload])
        assert container["image"] == image, workload
        assert container["imagePullPolicy"] == "IfNotPresent", workload
    assert f"-t {image} " in (ROOT / "deploy" / "Dockerfile").read_text()
    for page in (README, DOCS / "deployment.md"):  # the `docker build` they tell to run
        assert f"-t {image} " in page.read_text(), page.name


def test_database_password_comes_from_cloudnativepg_secret(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    objects = k8s_objects()
    [cluster] = [o for o in objects.values() if o["kind"] == "Cluster"]
    initdb = cluster["spec"]["bootstrap"]["initdb"]
    generated = all_secrets(objects)[f"{cluster['metadata']['name']}-app"]
    for name in ("Deployment/upsert-worker", "Job/upsert-worker-migrate"):
        settings, env = k8s_process_settings(name, monkeypatch, tmp_path)
        assert secret_refs(pod_of(objects[name])[1])["PGPASSWORD"] == (
            f"{cluster['metadata']['name']}-app", "password")
        assert env["PGPASSWORD"] == generated["password"]  # any characters: not in a URL
        dsn = urlsplit(settings.databases["demo"].dsn.get_secret_value())
        assert dsn.password is None  # asyncpg takes PGPASSWORD
        assert (dsn.username, dsn.path[1:]) == (initdb["owner"], initdb["database"])
        namespace = kustomization()["namespace"]
        assert dsn.hostname == f"{cluster['metadata']['name']}-rw.{namespace}.svc"
        assert "target_session_attrs=read-write" in dsn.query


def test_max_connections_covers_every_worker_pool(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    objects = k8s_objects()
    settings, _ = k8s_process_settings("Deployment/upsert-worker", monkeypatch, tmp_path)
    deployment = objects["Deployment/upsert-worker"]["spec"]
    scaled = objects["ScaledObject/upsert-worker"]["spec"]
    pods = (max(scaled["maxReplicaCount"], deployment["replicas"])
            + int(deployment["strategy"]["rollingUpdate"]["maxSurge"]))
    # Per worker: its pool, and one connection while it migrates (in the background).
    per_worker = sum(db.pool_max_size + 1 for db in settings.databases.values())
    migrate_job = len(settings.databases)  # one database at a time, one connection each
    superuser_reserved = 3  # PostgreSQL's default
    operator_and_people = 10  # CloudNativePG's own connections, an operator's psql
    [cluster] = [o for o in objects.values() if o["kind"] == "Cluster"]
    max_connections = int(cluster["spec"]["postgresql"]["parameters"].get(
        "max_connections", 100))
    assert (pods * per_worker + migrate_job + superuser_reserved + operator_and_people
            <= max_connections)


def test_worker_memory_limit_holds_its_documented_bound(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    """docs/deployment.md (Kubernetes, Memory): the measured peak, plus every prefetched
    body as received, plus one inflated body; the measurement holds at the default bytes
    in progress."""
    settings, _ = k8s_process_settings("Deployment/upsert-worker", monkeypatch, tmp_path)
    limits = settings.limits
    assert limits.max_bytes_in_progress <= LimitsSettings().max_bytes_in_progress
    bound = (MEASURED_PEAK_BYTES + settings.amqp.prefetch_count * limits.max_body_bytes
             + limits.max_decompressed_bytes)
    _, container = pod_of(k8s_objects()["Deployment/upsert-worker"])
    assert quantity(container["resources"]["limits"]["memory"]) >= bound
    page = (DOCS / "deployment.md").read_text()
    assert re.search(r"250 MB.*prefetch_count.*max_body_bytes.*max_decompressed_bytes",
                     page[page.index("## Kubernetes"):], re.S)


def test_pdb_and_keda_target_the_worker() -> None:
    objects = k8s_objects()
    labels = objects["Deployment/upsert-worker"]["spec"]["selector"]["matchLabels"]
    assert objects["PodDisruptionBudget/upsert-worker"]["spec"]["selector"]["matchLabels"] == labels
    scaled = objects["ScaledObject/upsert-worker"]["spec"]
    assert scaled["scaleTargetRef"]["name"] == "upsert-worker"
    [trigger] = scaled["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert (trigger["metadata"]["queueName"], trigger["metadata"]["mode"]) == (
        "vbapi.requests", "QueueLength")
    assert urlsplit(trigger["metadata"]["host"]).password is None  # from the Secret below
    auth = objects[f"TriggerAuthentication/{trigger['authenticationRef']['name']}"]
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    secrets = all_secrets(objects)
    assert set(refs) == {"username", "password"}
    assert all(key in secrets[secret] for secret, key in refs.values())


def test_example_secrets_are_all_some_process_uses() -> None:
    objects = k8s_objects()
    used = {ref for name in WORKLOADS for ref in secret_refs(pod_of(objects[name])[1]).values()}
    used |= {(o["spec"]["importCredentialsSecret"]["name"], key) for o in objects.values()
             if o["kind"] == "User" and "importCredentialsSecret" in o["spec"]
             for key in ("username", "password")}
    shown = {(name, key) for name, data in example_secrets().items() for key in data}
    assert shown <= used
    config = tomllib.loads(objects["ConfigMap/upsert-worker"]["data"]["worker.toml"])
    assert "password" not in str(config).lower()
