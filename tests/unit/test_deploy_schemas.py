"""Every object of deploy/k8s is valid for the API server that takes it: the Kubernetes
schemas for its own kinds, the operators' CRD schemas for theirs, both vendored as test
data (tests/data/deploy/README.md says where from), strict: a misspelt field fails."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource

from tests.support.deploy_support import K8S, k8s_objects, yaml_documents
from tests.support.paths import DATA

SCHEMAS = DATA / "deploy"
DEFINITIONS = "https://kubernetes.io/api/_definitions.json"


def registry() -> Registry[Any]:
    definitions = json.loads((SCHEMAS / "kubernetes" / "_definitions.json").read_text())
    resource: Resource[Any] = Resource.from_contents(definitions)
    empty: Registry[Any] = Registry()
    return empty.with_resource(DEFINITIONS, resource)


def schema_for(obj: dict[str, Any]) -> dict[str, Any]:
    group, _, version = obj["apiVersion"].rpartition("/")
    crd = SCHEMAS / "crds" / f"{group}-{version}-{obj['kind']}.json"
    if crd.exists():
        return dict(json.loads(crd.read_text()))
    # kubernetes-validate's names: kind-version for the core group, kind-group-version.
    short_group = group.split(".")[0]
    name = "-".join(p for p in (obj["kind"].lower(), short_group, version) if p)
    path = SCHEMAS / "kubernetes" / f"{name}.json"
    assert path.exists(), f"no schema for {obj['apiVersion']} {obj['kind']}"
    return dict(json.loads(path.read_text()))


def errors(obj: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema_for(obj), registry=registry())
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(obj)]


def all_objects() -> dict[str, dict[str, Any]]:
    objects = k8s_objects()
    for doc in yaml_documents(K8S / "secret.example.yaml"):
        objects[f"Secret/{doc['metadata']['name']}"] = doc
    return objects


@pytest.mark.parametrize("name", sorted(all_objects()))
def test_object_is_valid_for_its_api(name: str) -> None:
    assert errors(all_objects()[name]) == []


def misspelt(name: str, *path: str | int) -> dict[str, Any]:
    """The object with the last key of ``path`` renamed, as a typo would."""
    obj = copy.deepcopy(all_objects()[name])
    parent: Any = obj
    for part in path[:-1]:
        parent = parent[part]
    parent[str(path[-1]) + "x"] = parent.pop(str(path[-1]))
    return obj


@pytest.mark.parametrize("name, path", [
    ("Deployment/upsert-worker", ("spec", "template", "spec", "containers", 0,
                                  "imagePullPolicy")),
    ("Deployment/upsert-gateway", ("spec", "template", "spec", "containers", 0,
                                   "readinessProbe", "httpGet", "port")),
    ("Job/upsert-worker-migrate", ("spec", "ttlSecondsAfterFinished")),
    ("RabbitmqCluster/rabbitmq", ("spec", "rabbitmq", "additionalConfig")),
    ("RabbitmqCluster/rabbitmq", ("spec", "affinity", "podAntiAffinity")),
    ("Vhost/vbapi", ("spec", "defaultQueueType")),
    ("User/acme-loader", ("spec", "importCredentialsSecret")),
    ("Permission/upsert-gateway", ("spec", "permissions", "write")),
    ("Cluster/postgres", ("spec", "postgresql", "synchronous", "dataDurability")),
    ("Cluster/postgres", ("spec", "bootstrap", "initdb", "owner")),
    ("ScaledObject/upsert-worker", ("spec", "maxReplicaCount")),
    ("TriggerAuthentication/upsert-worker-rabbitmq", ("spec", "secretTargetRef", 0, "key")),
])
def test_a_misspelt_field_is_refused(name: str, path: tuple[str | int, ...]) -> None:
    assert errors(misspelt(name, *path))


def test_topology_operator_users_cannot_carry_the_impersonator_tag() -> None:
    """Why the gateway's broker user is declared by a Job (broker-users.yaml)."""
    user = copy.deepcopy(all_objects()["User/upsert-worker"])
    user["spec"]["tags"] = ["impersonator"]
    assert errors(user)
    user["spec"]["tags"] = ["management"]
    assert errors(user) == []


def test_every_reference_of_the_crd_schemas_resolves() -> None:
    resolver = registry().resolver()

    def refs(value: Any) -> list[str]:
        if isinstance(value, dict):
            return [v for k, v in value.items() if k == "$ref"] + [
                r for v in value.values() for r in refs(v)]
        return [r for v in value for r in refs(v)] if isinstance(value, list) else []

    for path in sorted((SCHEMAS / "crds").glob("*.json")):
        schema = json.loads(path.read_text())
        for ref in refs(schema):
            if ref.startswith(DEFINITIONS):
                resolver.lookup(ref)
            else:
                assert ref.startswith("#/$defs/") and ref[8:] in schema["$defs"], ref
