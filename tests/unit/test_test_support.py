"""The tests' own machinery, without any service: where a session's PostgreSQL and RabbitMQ
come from (tests/support/sources.py), the broker's administration by rabbitmqctl or the
management HTTP API (tests/support/broker_admin.py, here against a stand-in API), and
what the fault tier does when a server binary is missing (tests/support/faults/
required.py)."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import pytest

from tests.support.broker_admin import (
    ManagementApi,
    Queue,
    Rabbitmqctl,
    broker_admin,
    queues_of_rabbitmqctl,
)
from tests.support.faults.required import in_ci, missing
from tests.support.services import Services
from tests.support.sources import (
    POSTGRES,
    RABBITMQ,
    ServicesUnavailable,
    choose_source,
    configured,
    pg_address,
    session_services,
)

# --- where the services come from ------------------------------------------------------


@pytest.mark.parametrize(("configured_", "answers", "docker", "origin"), [
    (True, True, False, "settings"),
    (True, True, True, "settings"),    # Docker or not: what answers is used
    (False, True, True, "local"),
    (True, False, True, "container"),
    (False, False, True, "container"),
])
def test_the_source_is_what_answers_else_a_container(configured_: bool, answers: bool,
                                                     docker: bool, origin: str) -> None:
    source = choose_source(POSTGRES, configured=configured_, answers=answers, docker=docker)
    assert (source.service, source.origin) == (POSTGRES, origin)


@pytest.mark.parametrize("configured_", [True, False])
def test_nothing_answering_and_no_docker_is_an_error_naming_the_settings(
        configured_: bool) -> None:
    with pytest.raises(ServicesUnavailable) as error:
        choose_source(RABBITMQ, configured=configured_, answers=False, docker=False)
    message = str(error.value)
    assert message.startswith("RabbitMQ:") and "TEST_AMQP_HOST" in message
    assert ("the TEST_* settings give" if configured_ else "the local default") in message


def test_a_service_is_configured_by_its_own_settings_only() -> None:
    assert configured(POSTGRES, {"TEST_PG_DSN": "postgresql://x/y"})
    assert configured(POSTGRES, {"BENCH_PG_DSN": "postgresql://x/y"})
    assert not configured(RABBITMQ, {"TEST_PG_DSN": "postgresql://x/y"})
    assert configured(RABBITMQ, {"TEST_AMQP_PORT": "5673"})
    assert not configured(POSTGRES, {"PG_DSN": "x", "CI": "true"})


def test_the_address_of_a_dsn() -> None:
    assert pg_address("postgresql://root@127.0.0.1:1/postgres") == ("127.0.0.1", 1)
    assert pg_address("postgresql://u:p@db.example/x") == ("db.example", 5432)


LOCAL = Services("127.0.0.1", 5672, "guest", "guest", "postgresql://root@127.0.0.1:5432/postgres")


def fake_pg(stack: contextlib.ExitStack) -> str:
    stack.callback(STOPPED.append, "postgres")
    return "postgresql://root:test@docker-host:32768/postgres"


def fake_broker(stack: contextlib.ExitStack) -> dict[str, str | int]:
    stack.callback(STOPPED.append, "rabbitmq")
    return {"amqp_host": "docker-host", "amqp_port": 32769,
            "management_url": "http://guest:guest@docker-host:32770"}


STOPPED: list[str] = []


def test_containers_for_what_does_not_answer_for_the_session_only() -> None:
    STOPPED.clear()
    services = replace(LOCAL)
    url = services.amqp_url  # bound before: follows the switch
    with session_services(services, {}, probe=lambda host, port: port == 5672,
                          docker=lambda: True, start_pg=fake_pg,
                          start_broker=fake_broker) as sources:
        assert [(s.service, s.origin) for s in sources] == [(POSTGRES, "container"),
                                                            (RABBITMQ, "local")]
        assert services.pg_dsn == "postgresql://root:test@docker-host:32768/postgres"
        assert services.dsn_for("t") == "postgresql://root:test@docker-host:32768/t"
        assert url("v") == "amqp://guest:guest@127.0.0.1:5672/v"  # the local broker
        assert STOPPED == []
    assert STOPPED == ["postgres"]
    assert services == LOCAL


def test_a_broker_container_is_administered_through_its_api() -> None:
    STOPPED.clear()
    services = replace(LOCAL)
    with session_services(services, {"TEST_AMQP_HOST": "gone.example"},
                          probe=lambda host, port: port == 5432, docker=lambda: True,
                          start_pg=fake_pg, start_broker=fake_broker) as sources:
        assert [(s.service, s.origin) for s in sources] == [(POSTGRES, "local"),
                                                            (RABBITMQ, "container")]
        assert services.amqp_url("v") == "amqp://guest:guest@docker-host:32769/v"
        assert isinstance(services.broker, ManagementApi)
        assert services.broker.base == "http://docker-host:32770"
    assert STOPPED == ["rabbitmq"] and services == LOCAL


def test_docker_is_not_asked_when_everything_answers_and_needed_when_not() -> None:
    def no_docker() -> bool:
        raise AssertionError("Docker asked for nothing")

    with session_services(replace(LOCAL), {}, probe=lambda host, port: True,
                          docker=no_docker) as sources:
        assert [s.origin for s in sources] == ["local", "local"]
    given = r"^PostgreSQL: nothing answers at the address the TEST_\* settings give"
    with pytest.raises(ServicesUnavailable, match=given), \
            session_services(replace(LOCAL), {"TEST_PG_DSN": LOCAL.pg_dsn},
                             probe=lambda host, port: False, docker=lambda: False):
        pass


# --- the broker's administration -------------------------------------------------------


def test_the_management_api_when_its_url_is_set_else_rabbitmqctl() -> None:
    api = broker_admin("http://admin:secret@broker.example:15672/")
    assert isinstance(api, ManagementApi) and api.base == "http://broker.example:15672"
    ctl = broker_admin(None, which=lambda name: f"/opt/rabbitmq/sbin/{name}")
    assert isinstance(ctl, Rabbitmqctl) and ctl.command == ["/opt/rabbitmq/sbin/rabbitmqctl"]
    with pytest.raises(RuntimeError, match="TEST_AMQP_MANAGEMENT_URL"):
        broker_admin("", which=lambda name: None)


class RecordingRabbitmqctl(Rabbitmqctl):
    def __init__(self, output: str = "") -> None:
        super().__init__()
        self.calls: list[tuple[tuple[str, ...], bool]] = []
        self.output = output

    def run(self, *args: str, background: bool = False) -> str:
        self.calls.append((args, background))
        return self.output


def test_rabbitmqctl_commands() -> None:
    ctl = RecordingRabbitmqctl()
    ctl.add_vhost("v", default_queue_type="quorum")
    ctl.delete_vhost("v", wait=False)
    ctl.set_permissions("v", "acme")
    ctl.set_policy("v", "full", "^q$", {"max-length": 0}, apply_to="queues")
    assert ctl.calls == [
        (("add_vhost", "v", "--default-queue-type", "quorum"), False),
        (("delete_vhost", "v"), True),
        (("set_permissions", "-p", "v", "acme", ".*", ".*", ".*"), False),
        (("set_policy", "-p", "v", "--apply-to", "queues", "--priority", "0", "full", "^q$",
          '{"max-length": 0}'), False)]


def test_rabbitmqctl_queues_and_connections_are_read() -> None:
    rows = [{"name": "vbapi.requests", "type": "quorum", "policy": "",
             "arguments": [["x-queue-type", "longstr", "quorum"],
                           ["x-message-ttl", "long", 200]],
             "messages_ready": 2, "messages_unacknowledged": 1},
            {"name": "vbapi.dead", "type": "classic", "arguments": []}]
    assert queues_of_rabbitmqctl(json.dumps(rows)) == [
        Queue("vbapi.requests", "quorum", {"x-queue-type": "quorum", "x-message-ttl": 200},
              None, 2, 1),
        Queue("vbapi.dead", "classic", {}, None, 0, 0)]
    # list_connections lists every vhost's (it takes no -p): only v's are closed.
    ctl = RecordingRabbitmqctl(
        "<rabbit@h.1.2>\tv\t[{\"connection_name\",\"vbapi-upsert-worker\"}]\n"
        "<rabbit@h.1.3>\tv\t[{\"product\",\"other\"}]\n"
        "<rabbit@h.1.4>\tw\t[{\"connection_name\",\"vbapi-upsert-worker\"}]\n")
    assert ctl.close_connections("v", "vbapi-upsert-worker", "bye") == 1
    assert ctl.calls[-1] == (("close_connection", "<rabbit@h.1.2>", "bye"), False)


class StandInApi(BaseHTTPRequestHandler):
    """A management API that records requests and answers from ``answers``."""

    requests: ClassVar[list[tuple[str, str, Any, str | None]]] = []
    answers: ClassVar[dict[str, Any]] = {}

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        assert self.headers["authorization"] == "Basic YWRtaW46c2VjcmV0"  # admin:secret
        self.requests.append((self.command, self.path, body, self.headers.get("x-reason")))
        answer = self.answers.get(f"{self.command} {self.path}")
        if callable(answer):
            answer = answer()
        data = json.dumps(answer).encode() if answer is not None else b""
        self.send_response(200 if data else 204)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stand_in() -> Iterator[ManagementApi]:
    StandInApi.requests, StandInApi.answers = [], {}
    server = HTTPServer(("127.0.0.1", 0), StandInApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ManagementApi(f"http://admin:secret@127.0.0.1:{server.server_address[1]}",
                            listed_within_s=0.5)
    finally:
        server.shutdown()
        server.server_close()


def test_management_api_requests(stand_in: ManagementApi) -> None:
    StandInApi.answers = {
        "GET /api/users/acme": {"name": "acme", "password_hash": "h",
                                "hashing_algorithm": "rabbit_password_hashing_sha256"},
        "GET /api/queues/test%2Fv": [{"name": "vbapi.requests", "type": "quorum",
                                      "arguments": {"x-queue-type": "quorum"},
                                      "policy": "full", "messages_ready": 3}]}
    stand_in.add_vhost("test/v", default_queue_type="quorum")
    stand_in.set_permissions("test/v", "acme")
    stand_in.set_user_tags("acme", "impersonator")
    stand_in.set_policy("test/v", "full", "^q$", {"max-length": 0}, apply_to="queues")
    stand_in.clear_policy("test/v", "full")
    assert stand_in.queues("test/v") == [
        Queue("vbapi.requests", "quorum", {"x-queue-type": "quorum"}, "full", 3, 0)]
    stand_in.delete_vhost("test/v")
    assert [(method, path, body) for method, path, body, _ in StandInApi.requests] == [
        ("PUT", "/api/vhosts/test%2Fv", {"default_queue_type": "quorum",
                                         "defaultqueuetype": "quorum"}),
        ("PUT", "/api/permissions/test%2Fv/acme",
         {"configure": ".*", "write": ".*", "read": ".*"}),
        ("GET", "/api/users/acme", None),
        # The password kept: its hash given back with the new tags.
        ("PUT", "/api/users/acme", {"password_hash": "h", "tags": "impersonator",
                                    "hashing_algorithm": "rabbit_password_hashing_sha256"}),
        ("PUT", "/api/policies/test%2Fv/full", {"pattern": "^q$", "apply-to": "queues",
                                                "definition": {"max-length": 0},
                                                "priority": 0}),
        ("DELETE", "/api/policies/test%2Fv/full", None),
        ("GET", "/api/queues/test%2Fv", None),
        ("DELETE", "/api/vhosts/test%2Fv", None)]


def test_management_api_waits_for_a_new_connection_to_be_listed(
        stand_in: ManagementApi) -> None:
    listings = iter([[], [], [{"name": "127.0.0.1:5 -> 127.0.0.1:5672",
                               "client_properties": {"connection_name": "vbapi-upsert-client"}},
                              {"name": "other", "client_properties": {"product": "x"}}]])
    StandInApi.answers = {"GET /api/vhosts/v/connections": lambda: next(listings)}
    assert stand_in.connections("v") == []
    assert stand_in.close_connections("v", "vbapi-upsert-client", "gone") == 1
    assert StandInApi.requests[-1] == (
        "DELETE", "/api/connections/127.0.0.1%3A5%20-%3E%20127.0.0.1%3A5672", None, "gone")
    StandInApi.answers = {"GET /api/vhosts/v/connections": []}
    assert stand_in.close_connections("v", "nobody", "gone") == 0  # after listed_within_s


# --- the fault tier's server binaries --------------------------------------------------


def test_a_missing_server_binary_skips_but_fails_in_ci() -> None:
    with pytest.raises(pytest.skip.Exception, match="initdb not installed"):
        missing("initdb", {})
    with pytest.raises(pytest.skip.Exception):
        missing("initdb", {"CI": "false"})
    with pytest.raises(pytest.fail.Exception, match="initdb not installed, and CI is set"):
        missing("initdb", {"CI": "true"})
    assert in_ci({"CI": "1"}) and not in_ci({"CI": ""}) and not in_ci({})
