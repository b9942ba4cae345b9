"""The AsyncAPI document: current, valid AsyncAPI 3.0.0, and saying what the worker does.

``tests/data/asyncapi-3.0.0-schema.json`` is ``schemas/3.0.0-without-$id.json`` of the npm
package ``@asyncapi/specs`` 6.11.1 (Apache-2.0), the official JSON Schema of AsyncAPI 3.0.0,
bundled into one file; it is written in JSON Schema draft-07.

No broker or database: the document is rendered once per module (a few seconds, PyYAML's
emitter) and parsed once with libyaml where available.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
import yaml

from schemas.asyncapi import render_asyncapi
from schemas.entity import Entity, text
from schemas.jsonschema import REPLY_SCHEMA, item_schema
from schemas.registry import Registry, default_registry
from tests.support.paths import DATA, ROOT

DOCUMENT = ROOT / "docs" / "asyncapi.yaml"
SPEC_SCHEMA = DATA / "asyncapi-3.0.0-schema.json"
SHARED_MESSAGES = {"Reply", "RetryCopy", "DeadLetter"}
# libyaml's safe loader where available: Python's own takes 4x as long for 1.8 MB.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load(text: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(text, Loader=_Loader)
    return loaded


@pytest.fixture(scope="module")
def rendered() -> str:
    return render_asyncapi(default_registry())


@pytest.fixture(scope="module")
def doc(rendered: str) -> dict[str, Any]:
    return load(rendered)


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SPEC_SCHEMA.read_text())
    assert "draft-07" in schema["$schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def resolve(doc: dict[str, Any], node: Any) -> Any:
    """Follow local $refs until a node that is none."""
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        node = doc
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def test_the_asyncapi_document_is_current(rendered: str) -> None:
    assert DOCUMENT.read_text(encoding="utf-8") == rendered, \
        "run: upsert-worker docs asyncapi --output docs/asyncapi.yaml"


def test_the_document_is_valid_asyncapi_3(doc: dict[str, Any],
                                          validator: jsonschema.Draft7Validator) -> None:
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in errors[:10])


def test_the_validator_is_not_vacuous(validator: jsonschema.Draft7Validator) -> None:
    assert not validator.is_valid({"asyncapi": "3.0.0", "info": {"title": "no version"}})
    bad_operation = {"asyncapi": "3.0.0", "info": {"title": "t", "version": "1"},
                     "operations": {"o": {"action": "publish",
                                          "channel": {"$ref": "#/channels/c"}}}}
    assert not validator.is_valid(bad_operation)


def test_every_ref_resolves_and_operations_use_their_channels_messages(
        doc: dict[str, Any]) -> None:
    for ref in set(refs(doc)):
        assert resolve(doc, {"$ref": ref}) is not None, ref
    for name, operation in doc["operations"].items():
        channel_ref = operation["channel"]["$ref"]
        for message in operation["messages"]:
            assert message["$ref"].startswith(channel_ref + "/messages/"), (name, message)


def test_one_message_per_entity_on_the_request_exchange(doc: dict[str, Any]) -> None:
    names = [e.name for e in default_registry().entities]
    assert len(names) == 730
    messages = doc["components"]["messages"]
    assert set(messages) - SHARED_MESSAGES == set(names)
    requests = doc["channels"]["requests"]
    assert list(requests["messages"]) == names
    assert requests["bindings"]["amqp"]["is"] == "routingKey"
    assert requests["bindings"]["amqp"]["exchange"] == {
        "name": "vbapi", "type": "topic", "durable": True, "autoDelete": False}
    send = doc["operations"]["sendBatch"]
    assert send["action"] == "send" and len(send["messages"]) == 730
    for name in names:
        assert messages[name]["name"] == name
        assert messages[name]["bindings"]["amqp"]["x-routing-key"] == name


def test_benefit_message(doc: dict[str, Any]) -> None:
    message = doc["components"]["messages"]["Benefit"]
    assert message["payload"]["type"] == "array"
    item = resolve(doc, message["payload"]["items"])
    assert item == item_schema(default_registry().by_name("Benefit"))
    assert item["properties"]["benefit_Code"]["maxLength"] == 10
    assert "benefit_Code" in item["required"]
    headers = resolve(doc, message["headers"])
    assert set(headers["required"]) == {"path", "vbasoftware-database"}
    properties = resolve(doc, message["bindings"]["amqp"]["x-properties"])["properties"]
    assert set(properties) == {"content_type", "content_encoding", "message_id",
                               "correlation_id", "reply_to", "timestamp", "user_id"}
    assert properties["content_encoding"]["enum"] == ["gzip"]


def test_reply(doc: dict[str, Any]) -> None:
    reply = doc["components"]["messages"]["Reply"]
    assert resolve(doc, reply["payload"]) == REPLY_SCHEMA
    headers = resolve(doc, reply["headers"])
    assert headers["properties"]["status"]["type"] == "integer"
    assert set(headers["required"]) == {"status", "path", "vbasoftware-database",
                                        "activity-id"}
    send = doc["operations"]["sendBatch"]
    assert send["reply"]["address"]["location"] == "$message.header#/reply_to"
    assert doc["operations"]["receiveReply"]["action"] == "receive"
    unaddressed = resolve(doc, doc["operations"]["receiveUnaddressedReply"]["channel"])
    assert unaddressed["address"] == "vbapi.replies"


def test_retries_and_dead_letters_match_the_worker(doc: dict[str, Any]) -> None:
    from worker.amqp import deadletters, topology
    from worker.core import wire
    from worker.core.wire import DATABASE_HEADER, PATH_HEADER
    from worker.settings import RetrySettings

    channels = doc["channels"]
    delays = channels["retries"]["parameters"]["delay"]["examples"]
    assert [channels["retries"]["address"].replace("{delay}", d) for d in delays] == \
        [topology.retry_queue_name(d) for d in RetrySettings().delays_s]
    retry_arguments = channels["retries"]["bindings"]["amqp"]["x-arguments"]
    assert retry_arguments["x-dead-letter-routing-key"] == topology.REQUEST_QUEUE
    assert {k: retry_arguments[k] for k in topology.RETRY_ARGUMENTS} == \
        topology.RETRY_ARGUMENTS
    assert channels["requestQueue"]["address"] == topology.REQUEST_QUEUE
    assert channels["requestQueue"]["bindings"]["amqp"]["x-arguments"] == \
        topology.REQUEST_ARGUMENTS
    assert channels["deadLetters"]["bindings"]["amqp"]["x-arguments"] == topology.CLASSIC
    assert channels["requests"]["bindings"]["amqp"]["exchange"]["name"] == \
        topology.REQUEST_EXCHANGE
    assert channels["replies"]["address"] == topology.REPLY_QUEUE
    assert channels["replies"]["bindings"]["amqp"]["x-exchange"]["name"] == \
        topology.REPLY_EXCHANGE
    assert channels["deadLetters"]["address"] == topology.DEAD_QUEUE

    schemas = doc["components"]["schemas"]
    assert set(schemas["RequestHeaders"]["required"]) == {PATH_HEADER, DATABASE_HEADER}
    assert wire.DRY_RUN_HEADER in schemas["RequestHeaders"]["properties"]
    assert schemas["Reply"]["properties"]["debug"]["properties"]["dryRun"]["type"] == "boolean"
    retry_headers = schemas["RetryHeaders"]["properties"]
    assert {wire.ATTEMPTS_HEADER, wire.RECEIVED_AT_HEADER, wire.USER_HEADER,
            wire.SIGNATURE_HEADER} <= set(retry_headers)
    dead = resolve(doc, doc["components"]["messages"]["DeadLetter"]["headers"])
    assert "x-upsert-error-status" in dead["required"]
    assert dead["properties"]["x-upsert-error-status"]["type"] == "integer"
    written = {h for h in deadletters.DROPPED_HEADERS if h.startswith("x-upsert-")}
    assert written | {wire.USER_HEADER, wire.SIGNATURE_HEADER} <= set(dead["properties"])
    receive = doc["operations"]["receiveDeadLetter"]
    assert receive["action"] == "receive"
    assert resolve(doc, receive["channel"])["address"] == topology.DEAD_QUEUE


def _entity(name: str) -> Entity:
    return Entity(name=name, table=name.lower(), path=f"/{name.lower()}-batch",
                  fields=(text("code", required=True, max_length=4),), key=("code",))


def test_rendering_is_deterministic_and_follows_the_registry() -> None:
    registry = Registry((_entity("Alpha"), _entity("Beta")))
    first = render_asyncapi(registry)
    assert render_asyncapi(registry) == first
    doc = load(first)
    assert list(doc["channels"]["requests"]["messages"]) == ["Alpha", "Beta"]
    assert "&id" not in first and "*id" not in first  # no YAML anchors or aliases


def test_an_entity_named_like_a_shared_component_is_refused() -> None:
    with pytest.raises(ValueError, match="Reply"):
        render_asyncapi(Registry((_entity("Reply"),)))
