"""What the deploy tests share: the files read as the platforms read them, and each
process's configuration loaded as its container gets it (tests/test_deploy_*.py)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import shlex
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import BaseModel

from tests.support.paths import ROOT
from worker.cli import build_parser
from worker.http.gateway import Gateway, build_app
from worker.http.health import HealthServer
from worker.settings import DatabaseSettings, Settings, load_settings

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"


def yaml_documents(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def rabbitmq_conf(text: str) -> dict[str, str]:
    """The ``key = value`` lines of a rabbitmq.conf (sysctl format)."""
    pairs = (line.split("=", 1) for line in text.splitlines()
             if line.strip() and not line.lstrip().startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def commands() -> set[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return set(action.choices)  # type: ignore[arg-type]


def parses_as_cli(argv: list[str]) -> None:
    """The arguments are accepted by the real command-line parser."""
    assert argv and argv[0] in commands(), argv
    build_parser().parse_args(argv)


def is_real_setting(env_name: str) -> bool:
    """UPSERT_A__B__C names a field of Settings."""
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


def settings_from_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                      config: Path | None = None) -> Settings:
    """Settings as a process with exactly this environment and file loads them."""
    for name in list(os.environ):
        if name.startswith("UPSERT_") or name.startswith("PG"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("UPSERT_"):
            assert is_real_setting(name), name
        monkeypatch.setenv(name, value)
    return load_settings(config)


# --- probes, answered by the code itself --------------------------------------------

def worker_probe_status(settings: Settings, path: str) -> int:
    async def ping(name: str) -> bool:
        return True
    server = HealthServer(settings.metrics, settings.databases, consuming=lambda: True,
                          ping=ping)
    return server.respond("GET", path)[0]


def gateway_probe_status(settings: Settings, path: str) -> int:
    async def get() -> int:
        transport = httpx.ASGITransport(app=build_app(Gateway(settings)))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            return (await client.get(path)).status_code
    return asyncio.run(get())


def healthcheck_url(test: list[str]) -> str:
    """The URL a Docker health check (CMD form) asks."""
    [url] = re.findall(r"https?://[^'\" ]+", shlex.join(test))
    return str(url)


# --- Kubernetes ---------------------------------------------------------------------

def kustomization() -> dict[str, Any]:
    return dict(yaml.safe_load((K8S / "kustomization.yaml").read_text()))


def k8s_objects() -> dict[str, dict[str, Any]]:
    """Every object kustomize applies, by "Kind/name"."""
    objects = {}
    for name in kustomization()["resources"]:
        for doc in yaml_documents(K8S / name):
            objects[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return objects


def example_secrets() -> dict[str, dict[str, str]]:
    """The Secrets to create by hand, as secret.example.yaml shows them."""
    return {doc["metadata"]["name"]: doc["stringData"]
            for doc in yaml_documents(K8S / "secret.example.yaml")}


def _generated(seed: str) -> str:
    # The Topology Operator's RandomEncodedString(24): URL-safe base64 of 24 random bytes,
    # here with both of the characters that are not letters or digits.
    encoded = base64.urlsafe_b64encode(hashlib.sha256(seed.encode()).digest()[:24]).decode()
    return "-_" + encoded[2:]


def generated_secrets(objects: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    """The Secrets the operators make for these manifests, with made-up values of the
    shape they generate (the characters included)."""
    out: dict[str, dict[str, str]] = {}
    for obj in objects.values():
        name, spec = obj["metadata"]["name"], obj.get("spec", {})
        if obj["kind"] == "User" and "importCredentialsSecret" not in spec:
            out[f"{name}-user-credentials"] = {"username": _generated(name + "u"),
                                               "password": _generated(name + "p")}
        elif obj["kind"] == "RabbitmqCluster":
            out[f"{name}-default-user"] = {"username": "default_user_" + _generated(name),
                                           "password": _generated(name + "p")}
        elif obj["kind"] == "Cluster" and obj["apiVersion"].startswith("postgresql.cnpg.io"):
            initdb = spec["bootstrap"]["initdb"]
            # A password of any characters: it reaches asyncpg as PGPASSWORD, not in a URL.
            out[f"{name}-app"] = {"username": initdb["owner"], "dbname": initdb["database"],
                                  "password": _generated(name + "p") + "'\\ @:/%"}
    return out


def all_secrets(objects: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {**generated_secrets(objects), **example_secrets()}


def container_env(container: dict[str, Any],
                  secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """The container's environment as the kubelet makes it: in order, Secret references
    resolved, $(NAME) of an earlier variable expanded."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(
                r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), item["value"])
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        assert ref["name"] in secrets, f"{item['name']}: no Secret {ref['name']}"
        assert ref["key"] in secrets[ref["name"]], f"{item['name']}: no key {ref['key']}"
        env[item["name"]] = secrets[ref["name"]][ref["key"]]
    return env


def secret_refs(container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Environment variable -> (Secret, key) it comes from."""
    return {item["name"]: (item["valueFrom"]["secretKeyRef"]["name"],
                           item["valueFrom"]["secretKeyRef"]["key"])
            for item in container.get("env", []) if "valueFrom" in item}


def pod_config_file(pod: dict[str, Any], container: dict[str, Any],
                    objects: dict[str, dict[str, Any]], tmp_path: Path) -> Path:
    """The file --config names, written as the mounted ConfigMap puts it there."""
    args = container["args"]
    config = Path(args[args.index("--config") + 1])
    [mount] = [m for m in container["volumeMounts"] if Path(m["mountPath"]) == config.parent]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    config_map = objects[f"ConfigMap/{volume['configMap']['name']}"]
    path = tmp_path / config.name
    path.write_text(config_map["data"][config.name])
    return path


def pod_of(obj: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod spec, its one container) of a Deployment or Job."""
    pod = obj["spec"]["template"]["spec"]
    [container] = pod["containers"]
    return pod, container


def k8s_process_settings(name: str, monkeypatch: pytest.MonkeyPatch,
                         tmp_path: Path) -> tuple[Settings, dict[str, str]]:
    """The settings of a Deployment's or Job's process, as its pod loads them, with the
    Secrets of secret.example.yaml and those the operators generate; and its environment."""
    objects = k8s_objects()
    pod, container = pod_of(objects[name])
    parses_as_cli(container["args"])
    env = container_env(container, all_secrets(objects))
    config = pod_config_file(pod, container, objects, tmp_path)
    return settings_from_env(env, monkeypatch, config), env


_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def quantity(text: str) -> int:
    """Bytes of a Kubernetes memory quantity ("640Mi", "2Gi", "500M")."""
    number, unit = re.fullmatch(r"(\d+)([kMG]i?|)", text).groups()  # type: ignore[union-attr]
    return int(number) * _UNITS[unit]
