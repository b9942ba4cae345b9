"""The client distribution (client/, import name vbapi_upsert_client) stands alone: it
imports nothing of the worker, depends on aio-pika and orjson only, and its own copies of
the worker's wire names and batch routes say what the worker's say.

When the declarations change, write the client's routes again with
    .venv/bin/python -m tests.unit.test_client_package
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import pkgutil
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pytest

import vbapi_upsert_client
from schemas.docs import render_client_routes
from schemas.registry import default_registry
from tests.support.paths import ROOT
from vbapi_upsert_client import errors as client_errors
from vbapi_upsert_client import wire as client_wire
from vbapi_upsert_client.routes import Routes, default_routes
from worker.amqp import topology
from worker.core import wire

CLIENT = ROOT / "client"
ROUTES_FILE = CLIENT / "vbapi_upsert_client" / "routes.json"
# Never in the client's imports, nor among what installing it brings.
WORKER_ONLY = {"worker", "schemas", "bench", "asyncpg", "pydantic", "pydantic_settings",
               "starlette", "uvicorn", "structlog", "msgspec", "prometheus_client"}


# --- the same names on the wire -------------------------------------------------------

def test_the_client_wire_names_are_the_workers() -> None:
    assert client_wire.REQUEST_EXCHANGE == topology.REQUEST_EXCHANGE
    assert client_wire.JSON_CONTENT_TYPE == wire.JSON_CONTENT_TYPE
    assert client_wire.MAX_MESSAGE_ID_BYTES == wire.MAX_MESSAGE_ID_BYTES
    assert client_wire.PATH_HEADER == wire.PATH_HEADER
    assert client_wire.DATABASE_HEADER == wire.DATABASE_HEADER
    assert client_wire.DRY_RUN_HEADER == wire.DRY_RUN_HEADER
    assert client_wire.STATUS_HEADER == wire.STATUS_HEADER
    # Every other name the client has is one of the worker's too, with the same value.
    shared = {name: value for name, value in vars(client_wire).items()
              if name.isupper() and hasattr(wire, name)}
    assert shared == {name: getattr(wire, name) for name in shared}


def test_the_client_routes_are_the_declarations() -> None:
    assert ROUTES_FILE.read_text() == render_client_routes(default_registry()), (
        "client/vbapi_upsert_client/routes.json is out of date: write it again with "
        "upsert-worker docs client-routes --output client/vbapi_upsert_client/routes.json")


def test_the_client_routes_a_path_as_the_worker_does() -> None:
    registry, routes = default_registry(), default_routes()
    paths = [re.sub(r"\{[^}]*\}", "x%2Fy", e.path) for e in registry.entities]
    paths += ["/benefits-batch/", "/benefits-batch?x=1", "/no-such-batch", "benefits-batch",
              "/", "", "/benefits//places-batch", "/benefits/places-batch"]
    for path in paths:
        route = registry.route(path)
        assert routes.entity_of(path) == (route.entity.name if route else None), path
        assert routes.routing_key(path) == (route.entity.name if route else "unknown"), path
    assert routes.routing_key(None) == "unknown"


def test_a_literal_segment_wins_over_a_parameter() -> None:
    routes = Routes({"/a/{p}/c": "Param", "/a/b/d": "Literal", "/a/b/c/e": "Longer"})
    assert routes.entity_of("/a/b/d") == "Literal"
    assert routes.entity_of("/a/b/c") == "Param"  # the literal branch ends nowhere
    assert routes.entity_of("/a//c") is None


# --- nothing of the worker ------------------------------------------------------------

_PROBE = """
import json, sys
before = set(sys.modules)
import vbapi_upsert_client, vbapi_upsert_client.sync
from vbapi_upsert_client.routes import default_routes
default_routes().routing_key("/benefits-batch")
vbapi_upsert_client.UpsertClient("amqp://guest:guest@127.0.0.1/")
print(json.dumps(sorted({name.split(".")[0] for name in set(sys.modules) - before})))
"""


def _requirement_closure(distribution: str) -> set[str]:
    """The distributions installing ``distribution`` brings (those installed here)."""
    seen: set[str] = set()
    waiting = [distribution]
    while waiting:
        name = re.sub(r"[-_.]+", "-", waiting.pop()).lower()
        if name in seen:
            continue
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # for another Python (a marker), or optional
        seen.add(name)
        waiting += [m.group() for r in requires if "extra ==" not in r
                    if (m := re.match(r"[A-Za-z0-9._-]+", r))]
    return seen


def test_the_client_imports_nothing_but_aio_pika_orjson_and_the_standard_library() -> None:
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                          check=True, cwd=CLIENT)
    imported = set(json.loads(done.stdout)) - set(sys.stdlib_module_names)
    distributions = _requirement_closure("vbapi-upsert-client")
    provided = {module for module, names in metadata.packages_distributions().items()
                if {re.sub(r"[-_.]+", "-", n).lower() for n in names} & distributions}
    # Cython's runtime modules come with compiled extensions, of any distribution.
    runtime = {m for m in imported if m == "cython_runtime" or m.startswith("_cython_")}
    assert {"aio_pika", "orjson", "vbapi_upsert_client"} <= imported
    assert imported - runtime <= provided | {"vbapi_upsert_client"}
    assert not imported & WORKER_ONLY
    assert not provided & WORKER_ONLY


def test_the_client_depends_on_aio_pika_and_orjson_only() -> None:
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "vbapi-upsert-client"
    assert sorted(re.match(r"[\w-]+", d).group() for d in project["dependencies"]) == [  # type: ignore[union-attr]
        "aio-pika", "orjson"]


def test_every_install_path_installs_the_client() -> None:
    dev = (ROOT / "dev").read_text()
    assert "-e ./client" in dev and "client/pyproject.toml" in dev
    assert dev.index("-e ./client") < dev.index("-e '.[test]'")
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "COPY client ./client" in dockerfile and "./client ." in dockerfile


# --- one error tree, its own names ----------------------------------------------------

def _exception_classes(package: str) -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, f"{package}."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (inspect.isclass(value) and issubclass(value, BaseException)
                    and value.__module__ == info.name):
                found[name] = value
    return found


def test_the_client_has_one_root_exception_and_no_name_of_the_workers() -> None:
    client = _exception_classes("vbapi_upsert_client")
    assert set(client) >= {"ClientError", "UpsertTimeout", "ReplyLost", "ProblemError",
                           "ItemsFailed", "PropertyTooLong", "BrokerUnreachable"}
    assert all(issubclass(c, client_errors.ClientError) for c in client.values())
    assert all(getattr(vbapi_upsert_client, name) is c for name, c in client.items())
    worker = _exception_classes("worker") | _exception_classes("schemas")
    assert not set(client) & set(worker)


@dataclass
class _Message:
    body: bytes
    correlation_id: str = "m-1"
    headers: dict[str, Any] | None = None


@pytest.mark.parametrize("body", [b"not json", b'{"data": [{"status": 201}]}', b"[1]"])
async def test_an_unreadable_reply_fails_its_call_with_its_cause(body: bytes) -> None:
    client = vbapi_upsert_client.UpsertClient("amqp://guest:guest@127.0.0.1/")
    future: asyncio.Future[vbapi_upsert_client.Reply] = asyncio.get_running_loop().create_future()
    client._waiting["m-1"] = (future, "m-1")
    await client._on_reply(_Message(body))  # type: ignore[arg-type]
    with pytest.raises(client_errors.UnreadableReply, match="batch m-1") as raised:
        future.result()
    cause = raised.value.__cause__
    assert cause is not None and cause is not raised.value
    assert not isinstance(cause, client_errors.ClientError)
