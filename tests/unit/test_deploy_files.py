"""Static checks of the Dockerfile, docker-compose.yml and the monitoring files (no Docker
engine here): they parse, and every command, port, setting, probe and metric they name is
a real one. deploy/k8s: tests/test_deploy_k8s.py, test_deploy_operators.py and
test_deploy_schemas.py."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from tests.support.deploy_support import (
    DEPLOY,
    ROOT,
    gateway_probe_status,
    healthcheck_url,
    parses_as_cli,
    rabbitmq_conf,
    settings_from_env,
    worker_probe_status,
)
from worker import metrics
from worker.http.gateway import check_exposure
from worker.settings import MetricsSettings

METRICS_PORT = MetricsSettings().port

# The per-object series of RabbitMQ's rabbitmq_prometheus plugin the rules and dashboard use.
RABBITMQ_METRICS = {"rabbitmq_queue_messages_ready", "rabbitmq_queue_messages_unacked",
                    "rabbitmq_queue_messages", "rabbitmq_queue_consumers"}


def worker_metric_names() -> set[str]:
    names = set()
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        for family in value.describe():
            names.add(family.name)
            for suffix in ("_total", "_bucket", "_count", "_sum", "_created"):
                names.add(family.name + suffix)
    return names


def metric_names_in(expr: str) -> set[str]:
    return set(re.findall(r"\b((?:upsert|rabbitmq)_[a-z_]+)\b", expr))


def assert_known_metrics(exprs: list[str]) -> None:
    known = worker_metric_names() | RABBITMQ_METRICS
    used = set().union(*(metric_names_in(e) for e in exprs))
    assert used, "no metric referenced"
    assert used <= known, f"unknown metrics: {sorted(used - known)}"


# --- Dockerfile ---------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_is_slim_non_root_and_runs_the_real_cli() -> None:
    steps = dockerfile_instructions()
    final_stage = steps[max(i for i, (k, _) in enumerate(steps) if k == "FROM"):]
    assert all("slim" in v for k, v in steps if k == "FROM")
    users = [v for k, v in final_stage if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    entrypoint = json.loads(next(v for k, v in final_stage if k == "ENTRYPOINT"))
    cmd = json.loads(next(v for k, v in final_stage if k == "CMD"))
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["upsert-worker"] and "upsert-worker" in scripts
    parses_as_cli(cmd)
    assert [v for k, v in final_stage if k == "EXPOSE"] == [str(METRICS_PORT)]
    healthcheck = next(v for k, v in final_stage if k == "HEALTHCHECK")
    assert "/healthz" in healthcheck and "UPSERT_METRICS__PORT" in healthcheck
    ignored = {line.strip() for line in (DEPLOY / "Dockerfile.dockerignore").read_text()
               .splitlines() if line.strip() and not line.startswith("#")}
    for key, value in steps:  # what is copied from the build context exists, and is sent
        if key == "COPY" and not value.startswith("--from"):
            for source in shlex.split(value)[:-1]:
                assert (ROOT / source).exists(), source
                assert source not in ignored, source


def test_dockerfile_env_is_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    steps = dockerfile_instructions()
    env = dict(re.findall(r"(UPSERT_\w+)=(\S+)", " ".join(v for k, v in steps if k == "ENV")))
    assert env == {"UPSERT_LOG__FORMAT": "json"}
    assert settings_from_env(env, monkeypatch).log.format == "json"


# --- docker-compose.yml -------------------------------------------------------------

def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


@pytest.mark.parametrize("name", ["migrate", "worker", "gateway"])
def test_compose_process_loads_its_configuration(name: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    service = compose()["services"][name]
    assert service["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
    parses_as_cli(service["command"])
    settings = settings_from_env(service["environment"], monkeypatch)
    if name == "gateway":
        check_exposure(settings.gateway)  # it would refuse to start otherwise
        assert f"{settings.gateway.host_port[1]}:{settings.gateway.host_port[1]}" in \
            service["ports"]
    else:
        assert set(settings.databases) == {"demo"}
        assert settings.metrics.port == METRICS_PORT


def test_compose_runs_broker_database_migrations_and_worker() -> None:
    services = compose()["services"]
    assert "management" in services["rabbitmq"]["image"]
    assert "15672:15672" in services["rabbitmq"]["ports"]
    assert services["migrate"]["command"] == ["migrate"]
    assert services["worker"]["command"] == ["run"]
    assert f"{METRICS_PORT}:{METRICS_PORT}" in services["worker"]["ports"]
    assert (services["worker"]["depends_on"]["migrate"]["condition"]
            == "service_completed_successfully")
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", ["worker", "gateway"])
def test_compose_health_checks_ask_the_process_own_port(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    service = compose()["services"][name]
    settings = settings_from_env(service["environment"], monkeypatch)
    if name == "worker":  # the image's HEALTHCHECK: /healthz on $UPSERT_METRICS__PORT
        assert "healthcheck" not in service
        assert service["environment"]["UPSERT_METRICS__PORT"] == str(settings.metrics.port)
        assert worker_probe_status(settings, "/healthz") == 200
        return
    url = urlsplit(healthcheck_url(service["healthcheck"]["test"]))
    assert url.hostname == "127.0.0.1"
    assert url.port == settings.gateway.host_port[1]
    assert gateway_probe_status(settings, url.path) == 200


def test_compose_postgres_health_check_goes_over_tcp() -> None:
    """The image's first start runs a temporary server on the Unix socket only: a check
    over the socket passes before the real server listens on TCP, where clients connect."""
    postgres = compose()["services"]["postgres"]
    test = postgres["healthcheck"]["test"]
    assert test[:2] == ["CMD", "pg_isready"]
    host = test[test.index("-h") + 1]
    assert host in ("127.0.0.1", "localhost")
    assert test[test.index("-d") + 1] == postgres["environment"]["POSTGRES_DB"]


def test_compose_monitoring_profile_scrapes_worker_and_gateway(
        monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose()["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            assert (ROOT / source).exists(), source
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {target for job in scrape["scrape_configs"]
               for config in job["static_configs"] for target in config["targets"]}
    gateway = settings_from_env(services["gateway"]["environment"], monkeypatch)
    for service, port in (("worker", METRICS_PORT), ("gateway", gateway.gateway.host_port[1])):
        assert f"{service}:{port}" in targets
        assert service in services["prometheus"]["depends_on"]
    assert gateway_probe_status(gateway, "/metrics") == 200


def test_compose_cluster_profile_runs_three_clustered_brokers_not_by_default() -> None:
    services = compose()["services"]
    nodes = {name: s for name, s in services.items() if "cluster" in s.get("profiles", [])}
    assert sorted(nodes) == ["rabbit-1", "rabbit-2", "rabbit-3"]
    assert all(s["profiles"] == ["cluster"] and s["hostname"] == name
               for name, s in nodes.items())
    assert {s["image"] for s in nodes.values()} == {services["rabbitmq"]["image"]}
    assert len({s["environment"]["RABBITMQ_ERLANG_COOKIE"] for s in nodes.values()}) == 1
    # Each node finds the others by the names their hostnames give them.
    [volume] = {v for s in nodes.values() for v in s["volumes"]}
    source, target = volume.split(":")[:2]
    assert target.startswith("/etc/rabbitmq/conf.d/") and target.endswith(".conf")
    conf = rabbitmq_conf((ROOT / source).read_text())
    assert conf["cluster_formation.peer_discovery_backend"] == "classic_config"
    listed = {v for k, v in conf.items() if k.startswith("cluster_formation.classic_config.nodes.")}
    assert listed == {f"rabbit@{s['hostname']}" for s in nodes.values()}
    # The others join the first once it runs, rather than boot as clusters of their own.
    for name in ("rabbit-2", "rabbit-3"):
        assert nodes[name]["depends_on"] == {"rabbit-1": {"condition": "service_healthy"}}
    ports = [p.split(":")[0] for s in services.values() for p in s.get("ports", [])]
    assert len(ports) == len(set(ports))
    for name, service in services.items():  # nothing started by default needs them
        if "profiles" not in service:
            assert not set(service.get("depends_on", {})) & set(nodes), name


# --- Prometheus rules and Grafana dashboard -----------------------------------------

def test_alert_rules_cover_the_cases_and_name_real_metrics() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    alerts = {r["alert"]: r for group in rules["groups"] for r in group["rules"]}
    for wanted in ("UpsertDeadLettersGrowing", "UpsertNoConsumer", "UpsertOldestBatchTooOld",
                   "UpsertErrorRate"):
        assert wanted in alerts
    assert_known_metrics([r["expr"] for r in alerts.values()])
    assert all("summary" in r["annotations"] for r in alerts.values())


def test_grafana_dashboard_and_provisioning() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "upsert-worker.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert_known_metrics(exprs)
    used = set().union(*(metric_names_in(e) for e in exprs))
    for family in ("upsert_batches_total", "upsert_items_total",
                   "upsert_batch_latency_seconds_bucket", "upsert_db_write_seconds_bucket",
                   "upsert_batches_in_flight"):
        assert family in used
    source = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uids = {d["uid"] for d in source["datasources"]}
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} <= uids
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
