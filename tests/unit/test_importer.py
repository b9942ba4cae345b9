"""The OpenAPI importer: the checked-in declarations are current, the rules and the
override table resolve what names alone do not, and nothing unresolved passes."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from schemas.importer import ImportFailed, Overrides, import_document, render, snake_case
from schemas.registry import DECLARATIONS, registry_from_declarations
from tests.support.paths import DATA, ROOT

DOCUMENT = DATA / "vbapi-openapi.json"


def _batch(model: str) -> dict[str, Any]:
    return {"put": {"summary": f"Create or Update Batch {model}", "requestBody": {"content": {
        "application/json": {"schema": {"type": "array", "items": {
            "$ref": f"#/components/schemas/{model}"}}}}}}}


def _item(model: str) -> dict[str, Any]:
    return {"put": {"summary": f"Update {model}", "requestBody": {"content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}}}}}}


def small_document() -> dict[str, Any]:
    """Two models: a shop, and its widgets nested under it, one referring to a colour
    table that has no endpoint."""
    return {
        "info": {"title": "test", "version": "1"},
        "paths": {
            "/shops-batch": _batch("Shop"),
            "/shops/{shopID}": _item("Shop"),
            "/shops/{shopID}/widgets-batch": _batch("Widget"),
            "/shops/{shopID}/widgets/{widgetKey}": _item("Widget"),
        },
        "components": {"schemas": {
            "Shop": {"type": "object", "required": ["shop_ID"], "properties": {
                "shop_ID": {"type": "string", "maxLength": 8},
                "opened": {"type": "string", "format": "date-time", "nullable": True}}},
            "Widget": {"type": "object", "required": ["widget_Key"], "properties": {
                "widget_Key": {"type": "integer"},
                "shop_ID": {"type": "string", "maxLength": 8},
                "colour": {"type": "string", "maxLength": 4, "nullable": True,
                           "x-references": "Colours.Colour"},
                "parts": {"type": "array", "items": {"type": "object"}, "nullable": True}}},
        }},
    }


def test_the_checked_in_declarations_are_those_of_the_document() -> None:
    """Re-importing the API's document gives exactly what is checked in."""
    import tomllib

    import orjson

    overrides = Overrides.from_dict(tomllib.loads(
        (DECLARATIONS.parent / "overrides.toml").read_text()))
    imported = import_document(orjson.loads(DOCUMENT.read_bytes()), overrides)
    assert render(imported.declarations) == DECLARATIONS.read_text()


def test_keys_bindings_and_parents_are_derived() -> None:
    imported = import_document(small_document(), Overrides())
    entities = {e["name"]: e for e in imported.declarations["entities"]}
    widget = entities["Widget"]
    assert widget["table"] == "widget"
    assert widget["key"] == ["shop_ID", "widget_Key"]       # from the item path
    assert widget["bindings"] == {"shopID": "shop_ID"}       # from the batch path
    assert widget["parents"] == [
        {"table": "shop", "fields": ["shop_ID"], "columns": ["shop_id"], "via": "nesting"},
        {"table": "colours", "fields": ["colour"], "columns": ["colour"],
         "via": "x-references"}]
    assert imported.declarations["tables"] == {
        "colours": {"key": ["colour"], "columns": [
            {"name": "colour", "type": "string", "maxLength": 4}]}}
    assert {"name": "parts", "type": "array", "nullable": True} in widget["fields"]
    # The key makes shop_ID required, and the importer says so.
    assert "Widget: key field shop_ID made required (the model leaves it optional)" \
        in imported.notes
    registry_from_declarations(imported.declarations)  # consistent as a whole


def test_an_unresolved_parameter_fails_with_a_clear_message() -> None:
    doc = small_document()
    doc["paths"]["/shops/{shopKey}/widgets-batch"] = doc["paths"].pop(
        "/shops/{shopID}/widgets-batch")
    with pytest.raises(ImportFailed, match=r"Widget: path parameter \{shopKey\} maps to no "
                                           r"field; add it to \[parameters.Widget\] or "
                                           r"\[scope\] in schemas/overrides.toml"):
        import_document(doc, Overrides())


def test_rules_and_overrides_resolve_parameters_and_are_reported() -> None:
    doc = small_document()
    shop = doc["components"]["schemas"]["Shop"]
    shop["properties"] = {"shop1": shop["properties"].pop("shop_ID")}
    shop["required"] = ["shop1"]
    doc["paths"]["/shops/{shop}"] = doc["paths"].pop("/shops/{shopID}")
    doc["paths"]["/shops/{shop}/widgets/{widgetKey}"] = doc["paths"].pop(
        "/shops/{shopID}/widgets/{widgetKey}")
    doc["paths"]["/shops/{shop}/widgets-batch"] = doc["paths"].pop(
        "/shops/{shopID}/widgets-batch")
    widget = doc["components"]["schemas"]["Widget"]
    widget["properties"]["widgetNumber_Key"] = widget["properties"].pop("widget_Key")
    widget["required"] = ["widgetNumber_Key"]
    doc["paths"]["/shops/{shop}/widgets/{wdgNumberKey}"] = doc["paths"].pop(
        "/shops/{shop}/widgets/{widgetKey}")
    overrides = Overrides(abbreviations={"wdg": "widget"}, scope={"Widget": ["shop"]})
    imported = import_document(doc, overrides)
    entities = {e["name"]: e for e in imported.declarations["entities"]}
    assert entities["Shop"]["key"] == ["shop1"]
    assert entities["Widget"]["key"] == ["widgetNumber_Key"]
    assert entities["Widget"]["scope"] == ["shop"]
    assert imported.notes[:3] == [
        "Shop: {shop} -> shop1 (rule: numbered field)",
        "Widget: {shop} scopes the path (override: not a field)",
        "Widget: {wdgNumberKey} -> widgetNumber_Key (rule: abbreviations)"]


def test_a_clash_of_tables_is_found_at_import() -> None:
    doc = small_document()
    doc["paths"]["/other-shops-batch"] = _batch("SHOP")
    doc["paths"]["/other-shops/{shopID}"] = _item("SHOP")
    doc["components"]["schemas"]["SHOP"] = copy.deepcopy(doc["components"]["schemas"]["Shop"])
    with pytest.raises(ImportFailed, match=r"tables declared twice: \['shop'\]"):
        import_document(doc, Overrides())


def test_snake_case() -> None:
    assert snake_case("GroupPlanYear") == "group_plan_year"
    assert snake_case("DRGCodes") == "drg_codes"
    assert snake_case("GroupUCPercent") == "group_uc_percent"


def test_the_command_changes_nothing_when_run_twice(tmp_path: Path) -> None:
    output = tmp_path / "vbapi.json"
    command = [sys.executable, "-m", "worker", "schemas", "import", str(DOCUMENT),
               "--output", str(output)]
    first = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    assert "resolved: Brokerage: {brokerage} -> brokerage1 (rule: numbered field)" \
        in first.stdout
    assert first.stdout.rstrip().endswith("changed")
    assert output.read_text() == DECLARATIONS.read_text()
    second = subprocess.run([*command, "--check"], capture_output=True, text=True,
                            timeout=120)
    assert second.returncode == 0 and second.stdout.rstrip().endswith("unchanged")


def test_the_endpoints_document_is_current() -> None:
    from schemas.docs import render_endpoints
    from schemas.registry import default_registry

    document = ROOT / "docs" / "endpoints.md"
    assert document.read_text() == render_endpoints(default_registry()), \
        "run: upsert-worker docs endpoints --output docs/endpoints.md"
