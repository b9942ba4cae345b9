"""Static checks of the deployment files (no Docker engine or cluster here): they parse,
and every command, port, setting, probe path and metric they name is a real one."""

from __future__ import annotations

import json
import os
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from pydantic import BaseModel

from worker import metrics
from worker.cli import build_parser
from worker.settings import (
    DatabaseSettings,
    MetricsSettings,
    RetrySettings,
    Settings,
    load_settings,
)
from worker.topology import DEAD_QUEUE, REPLY_QUEUE, REQUEST_QUEUE, retry_queue_name

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
METRICS_PORT = MetricsSettings().port

# The per-object series of RabbitMQ's rabbitmq_prometheus plugin the rules and dashboard use.
RABBITMQ_METRICS = {"rabbitmq_queue_messages_ready", "rabbitmq_queue_messages_unacked",
                    "rabbitmq_queue_messages", "rabbitmq_queue_consumers"}


def commands() -> set[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return set(action.choices)  # type: ignore[arg-type]


def parses_as_cli(argv: list[str]) -> None:
    """The arguments are accepted by the real command-line parser."""
    assert argv and argv[0] in commands(), argv
    build_parser().parse_args(argv)


def rabbitmq_conf(text: str) -> dict[str, str]:
    """The ``key = value`` lines of a rabbitmq.conf (sysctl format)."""
    pairs = (line.split("=", 1) for line in text.splitlines()
             if line.strip() and not line.lstrip().startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def yaml_documents(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


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


def is_real_setting(env_name: str) -> bool:
    """UPSERT_A__B__C names a field of Settings (loading alone would silently ignore a
    misspelt nested name)."""
    if not env_name.startswith("UPSERT_"):
        return False
    parts = env_name.removeprefix("UPSERT_").lower().split("__")
    model: type[BaseModel] = Settings
    while parts:
        name = parts.pop(0)
        field = model.model_fields.get(name)
        if field is None:
            return False
        if name == "databases":  # a dict: the next part is the logical database's name
            if len(parts) < 2:
                return False
            parts.pop(0)
            model = DatabaseSettings
            continue
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
            continue
        return not parts
    return False


def test_setting_name_check_refuses_misspellings() -> None:
    assert is_real_setting("UPSERT_AMQP__URL")
    assert is_real_setting("UPSERT_DATABASES__DEMO__DSN")
    assert not is_real_setting("UPSERT_AMQP__URI")
    assert not is_real_setting("UPSERT_DATABASES__DEMO__DNS")
    assert not is_real_setting("UPSERT_METRICS")


def settings_from_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                      config: Path | None = None) -> Settings:
    for name in list(os.environ):
        if name.startswith("UPSERT_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        assert is_real_setting(name), name
        monkeypatch.setenv(name, value)
    return load_settings(config)


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


def test_compose_runs_broker_database_migrations_and_worker(
        monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose()["services"]
    assert {"rabbitmq", "postgres", "migrate", "worker"} <= set(services)
    assert "management" in services["rabbitmq"]["image"]
    assert "15672:15672" in services["rabbitmq"]["ports"]
    for name in ("migrate", "worker"):
        service = services[name]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        parses_as_cli(service["command"])
        settings = settings_from_env(service["environment"], monkeypatch)
        assert settings.metrics.port == METRICS_PORT
        assert set(settings.databases) == {"demo"}
    assert services["migrate"]["command"] == ["migrate"]
    assert services["worker"]["command"] == ["run"]
    assert f"{METRICS_PORT}:{METRICS_PORT}" in services["worker"]["ports"]
    assert (services["worker"]["depends_on"]["migrate"]["condition"]
            == "service_completed_successfully")


def test_compose_monitoring_profile_mounts_real_files() -> None:
    services = compose()["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            assert (ROOT / source).exists(), source
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"]
               for job in scrape["scrape_configs"]}
    assert targets["upsert-worker"] == [f"worker:{METRICS_PORT}"]


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


# --- Kubernetes ---------------------------------------------------------------------

def k8s_objects() -> dict[str, dict[str, Any]]:
    objects = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml_documents(path):
            objects[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return objects


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present - {"secret.example.yaml"}


def test_deployment_probes_ports_and_settings(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    objects = k8s_objects()
    deployment = objects["Deployment/upsert-worker"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    parses_as_cli(container["args"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": METRICS_PORT}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}

    # The mounted ConfigMap plus the Secret-backed environment load as real settings.
    config_map = objects["ConfigMap/upsert-worker"]
    [mount] = container["volumeMounts"]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == "upsert-worker"
    config_arg = container["args"][container["args"].index("--config") + 1]
    file_name = Path(config_arg).name
    assert Path(config_arg).parent == Path(mount["mountPath"])
    config = tmp_path / file_name
    config.write_text(config_map["data"][file_name])
    secret = objects["Secret/upsert-worker"]["stringData"]
    env = {}
    for item in container["env"]:
        ref = item["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "upsert-worker" and ref["key"] in secret
        env[item["name"]] = secret[ref["key"]]
    settings = settings_from_env(env, monkeypatch, config)
    assert settings.metrics.port == METRICS_PORT
    assert settings.databases["demo"].dsn.get_secret_value() == secret["demo-dsn"]
    assert settings.databases["demo"].producers == ["acme-loader"]
    assert settings.amqp.url.get_secret_value() == secret["amqp-url"]
    # The pod gets its SIGTERM drain time, and more.
    assert pod["terminationGracePeriodSeconds"] > settings.worker.shutdown_grace_s
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(METRICS_PORT)


def test_pdb_and_keda_target_the_worker() -> None:
    objects = k8s_objects()
    labels = objects["Deployment/upsert-worker"]["spec"]["selector"]["matchLabels"]
    assert objects["PodDisruptionBudget/upsert-worker"]["spec"]["selector"]["matchLabels"] == labels
    scaled = objects["ScaledObject/upsert-worker"]["spec"]
    assert scaled["scaleTargetRef"]["name"] == "upsert-worker"
    [trigger] = scaled["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"]["queueName"] == "vbapi.requests"
    assert trigger["metadata"]["mode"] == "QueueLength"
    auth = objects[f"TriggerAuthentication/{trigger['authenticationRef']['name']}"]
    [ref] = auth["spec"]["secretTargetRef"]
    assert ref["parameter"] == "host"
    assert ref["key"] in objects["Secret/upsert-worker"]["stringData"]


def test_rabbitmq_cluster_has_three_nodes_and_the_worker_vhost_quorum_queues() -> None:
    objects = k8s_objects()
    cluster = objects["RabbitmqCluster/rabbitmq"]["spec"]
    assert cluster["replicas"] == 3
    assert cluster["image"] == compose()["services"]["rabbitmq"]["image"]
    config = rabbitmq_conf(cluster["rabbitmq"]["additionalConfig"])
    assert config["cluster_partition_handling"] == "pause_minority"
    spreads = cluster["affinity"]["podAntiAffinity"]
    [spread] = spreads["requiredDuringSchedulingIgnoredDuringExecution"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    # The vhost the worker's URL names: queues declared there without a type are quorum.
    amqp_url = objects["Secret/upsert-worker"]["stringData"]["amqp-url"]
    assert urlsplit(amqp_url).hostname.split(".")[0] == "rabbitmq"  # the cluster's Service
    vhost = unquote(urlsplit(amqp_url).path[1:])
    [vhost_spec] = [o["spec"] for o in objects.values() if o["kind"] == "Vhost"]
    assert vhost_spec["name"] == vhost and vhost_spec["defaultQueueType"] == "quorum"
    for obj in objects.values():
        if obj["apiVersion"] == "rabbitmq.com/v1beta1" and obj["kind"] != "RabbitmqCluster":
            assert obj["spec"]["rabbitmqClusterReference"] == {"name": "rabbitmq"}


def test_retry_queues_dead_letter_at_least_once() -> None:
    """The policy matches every retry queue the worker declares, in production's
    configuration and by default, and no other of its queues."""
    objects = k8s_objects()
    policy = objects["Policy/vbapi-retry-at-least-once"]["spec"]
    amqp_url = objects["Secret/upsert-worker"]["stringData"]["amqp-url"]
    assert policy["vhost"] == unquote(urlsplit(amqp_url).path[1:])
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
    assert compose()["services"]["postgres"]["image"].split(":")[1] == \
        cluster["imageName"].split(":")[1]
    # The database and owner the worker's DSN names.
    dsn = urlsplit(objects["Secret/upsert-worker"]["stringData"]["demo-dsn"])
    assert cluster["bootstrap"]["initdb"] == {"database": dsn.path[1:], "owner": dsn.username}
    assert cluster["affinity"]["podAntiAffinityType"] == "required"


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
