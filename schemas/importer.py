"""OpenAPI 3 document -> entity declarations.  Pure: a parsed document in, data out.

Every "Create or Update Batch" operation (a ``PUT`` whose body is an array of one model)
becomes an entity:

- its **key** comes from the single-item path of the same model: one field per path
  parameter;
- its **bindings** come from the batch path's parameters;
- its **parents** come from nesting (the entity whose item path is the batch path's prefix)
  and from ``x-references`` (a foreign key to the referenced entity's table, or to a
  key-only table where the reference has no endpoint).

A path parameter maps to a field by name, ignoring case and ``_``.  Where it does not,
a small rule set and the reviewed override table (``schemas/overrides.toml``) resolve it;
every such case is reported in :attr:`Imported.notes`, and one that nothing resolves is an
:class:`ImportFailed`.  Nothing is guessed silently.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BATCH_SUMMARY = "Create or Update Batch"
AUDIT_FIELDS = ("entry_Date", "entry_User", "update_Date", "update_User")
_PARAM = re.compile(r"\{([^}]+)\}")
_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


class ImportFailed(ValueError):
    """The document holds a case neither the rules nor the override table resolve."""


@dataclass
class Overrides:
    """The reviewed table of what the document cannot say (``schemas/overrides.toml``)."""

    entity_names: dict[str, str] = field(default_factory=dict)
    abbreviations: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, dict[str, str]] = field(default_factory=dict)
    scope: dict[str, list[str]] = field(default_factory=dict)
    item_paths: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Overrides:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ImportFailed(f"overrides: unknown table(s) {sorted(unknown)}")
        return cls(**data)


@dataclass
class Imported:
    declarations: dict[str, Any]
    notes: list[str]


def snake_case(name: str) -> str:
    """``GroupPlanYear`` -> ``group_plan_year``, ``DRGCodes`` -> ``drg_codes``."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def _norm(name: str) -> str:
    return name.replace("_", "").lower()


def _params(path: str) -> list[str]:
    return _PARAM.findall(path)


def _shape(path: str) -> str:
    return _PARAM.sub("{}", path)


def _model_of(schema: dict[str, Any]) -> str:
    return str(schema["$ref"]).rsplit("/", 1)[-1]


def _field(name: str, prop: dict[str, Any], required: bool) -> dict[str, Any]:
    kind = prop.get("type")
    if kind == "string" and prop.get("format") == "date-time":
        kind = "date-time"
    elif kind == "array":
        items = prop.get("items", {})
        if items.get("type") != "object":
            raise ImportFailed(f"field {name}: only arrays of objects are supported")
        kind = "array"
    elif kind not in ("string", "integer", "number", "boolean"):
        raise ImportFailed(f"field {name}: unsupported type {kind!r}")
    out: dict[str, Any] = {"name": name, "type": kind}
    if required:
        out["required"] = True
    if prop.get("nullable"):
        out["nullable"] = True
    for source, target in (("minLength", "minLength"), ("maxLength", "maxLength")):
        if source in prop:
            out[target] = int(prop[source])
    return out


class _Document:
    """The batch operations of a document, their models and single-item paths."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.schemas: dict[str, Any] = doc.get("components", {}).get("schemas", {})
        self.batch: dict[str, str] = {}             # model -> batch path
        self.items: dict[str, list[str]] = defaultdict(list)  # model -> item paths
        for path, operations in doc.get("paths", {}).items():
            for method, op in operations.items():
                if not isinstance(op, dict):
                    continue
                if method == "put" and str(op.get("summary", "")).startswith(BATCH_SUMMARY):
                    body = op["requestBody"]["content"]["application/json"]["schema"]
                    model = _model_of(body["items"])
                    if model in self.batch:
                        raise ImportFailed(f"model {model} has two batch paths: "
                                           f"{self.batch[model]} and {path}")
                    self.batch[model] = path
                elif method == "put":
                    body = op.get("requestBody", {}).get("content", {}).get(
                        "application/json", {}).get("schema", {})
                    if "$ref" in body:
                        self._add_item(_model_of(body), path)
                elif method == "get":
                    reply = op.get("responses", {}).get("200", {}).get("content", {}).get(
                        "application/json", {}).get("schema", {})
                    if "$ref" in reply and _model_of(reply).endswith("VBAResponse"):
                        self._add_item(_model_of(reply).removesuffix("VBAResponse"), path)

    def _add_item(self, model: str, path: str) -> None:
        if path not in self.items[model]:
            self.items[model].append(path)


class _Importer:
    def __init__(self, doc: dict[str, Any], overrides: Overrides) -> None:
        self.doc = _Document(doc)
        self.info = doc.get("info", {})
        self.overrides = overrides
        self.notes: list[str] = []
        self.entities: dict[str, dict[str, Any]] = {}   # model -> declaration
        self.by_model_lower: dict[str, str] = {}

    # -- keys and bindings ---------------------------------------------------------
    def item_path(self, model: str) -> str:
        chosen = self.overrides.item_paths.get(model)
        paths = self.doc.items.get(model, [])
        if chosen is not None:
            if chosen not in paths:
                raise ImportFailed(f"{model}: override item path {chosen} is not in the document")
            self.notes.append(f"{model}: item path {chosen} (override; of {len(paths)})")
            return chosen
        if len(paths) != 1:
            raise ImportFailed(f"{model}: {len(paths)} single-item paths {paths}; name the one "
                               f"that holds the key in [item_paths] of the overrides")
        return paths[0]

    def resolve(self, model: str, param: str, fields: dict[str, str]) -> str:
        """The field a path parameter names (``fields``: normalized name -> name)."""
        if _norm(param) in fields:
            return fields[_norm(param)]
        override = self.overrides.parameters.get(model, {}).get(param)
        if override is not None:
            if override not in fields.values():
                raise ImportFailed(f"{model}: override {{{param}}} -> {override}: no such field")
            self.notes.append(f"{model}: {{{param}}} -> {override} (override)")
            return override
        numbered = fields.get(_norm(param) + "1")
        if numbered is not None:
            self.notes.append(f"{model}: {{{param}}} -> {numbered} (rule: numbered field)")
            return numbered
        words = _WORDS.findall(param)
        expanded = "".join(self.overrides.abbreviations.get(w.lower(), w) for w in words)
        if expanded != param and _norm(expanded) in fields:
            found = fields[_norm(expanded)]
            self.notes.append(f"{model}: {{{param}}} -> {found} (rule: abbreviations)")
            return found
        raise ImportFailed(f"{model}: path parameter {{{param}}} maps to no field; add it to "
                           f"[parameters.{model}] or [scope] in schemas/overrides.toml")

    def declare(self, model: str, batch_path: str) -> dict[str, Any]:
        schema = self.doc.schemas.get(model)
        if schema is None:
            raise ImportFailed(f"{batch_path}: model {model} is not in components.schemas")
        props: dict[str, Any] = schema.get("properties", {})
        fields = {_norm(n): n for n in props}
        scope = list(self.overrides.scope.get(model, []))
        for param in scope:
            self.notes.append(f"{model}: {{{param}}} scopes the path (override: not a field)")
        item_path = self.item_path(model)
        key = [self.resolve(model, p, fields) for p in _params(item_path) if p not in scope]
        bindings = {p: self.resolve(model, p, fields) for p in _params(batch_path)
                    if p not in scope}
        required = set(schema.get("required", []))
        for name in key:
            if name not in required:
                self.notes.append(f"{model}: key field {name} made required (the model "
                                  f"leaves it optional)")
                required.add(name)
        name = self.overrides.entity_names.get(model, model)
        return {
            "name": name, "model": model, "path": batch_path, "item_path": item_path,
            "table": snake_case(name), "key": key, "bindings": bindings, "scope": scope,
            "parents": [],
            "fields": [_field(n, p, n in required) for n, p in props.items()],
        }

    # -- parents -------------------------------------------------------------------
    def nesting_parent(self, child: dict[str, Any], item_shapes: dict[str, str]) -> None:
        prefix = child["path"].rsplit("/", 1)[0]
        parent_model = item_shapes.get(_shape(prefix))
        if parent_model is None:
            return
        parent = self.entities[parent_model]
        parent_params = _params(parent["item_path"])
        child_params = _params(prefix)
        by_param = dict(zip(parent_params, child_params, strict=True))
        fields = []
        for param in parent_params:
            if param in parent["scope"]:
                continue
            bound = child["bindings"].get(by_param[param])
            if bound is None:
                self.notes.append(f"{child['model']}: nesting parent {parent['table']} not "
                                  f"enforced: its key part {{{param}}} has no item field")
                return
            fields.append(bound)
        self.add_parent(child, parent["table"], fields, self.key_columns(parent), "nesting")

    def key_columns(self, entity: dict[str, Any]) -> list[str]:
        return [k.lower() for k in entity["key"]]

    def add_parent(self, child: dict[str, Any], table: str, fields: list[str],
                   columns: list[str], via: str) -> None:
        if table == child["table"] and [f.lower() for f in fields] == columns:
            # A record's key referring to itself: always true, and no parent to check.
            self.notes.append(f"{child['model']}: reference of its key to itself skipped")
            return
        kinds = {f["name"]: f["type"] for f in child["fields"]}
        target = self.table_kinds(table)
        for name, column in zip(fields, columns, strict=True):
            if target is not None and target.get(column) != kinds[name]:
                self.notes.append(f"{child['model']}: parent {table} not enforced: "
                                  f"{name} ({kinds[name]}) vs {table}.{column} "
                                  f"({target.get(column)})")
                return
        for existing in child["parents"]:
            if existing["table"] == table and existing["fields"] == fields:
                return
        child["parents"].append({"table": table, "fields": fields, "columns": columns,
                                 "via": via})

    def table_kinds(self, table: str) -> dict[str, str] | None:
        for entity in self.entities.values():
            if entity["table"] == table:
                return {f["name"].lower(): f["type"] for f in entity["fields"]}
        return None

    def references(self, child: dict[str, Any]) -> list[tuple[str, list[tuple[str, str]]]]:
        """The child's x-references, grouped by referenced table and role: fields that
        refer to one table together make one composite reference, unless the same column
        is referred to twice (``ex_Code1`` .. ``ex_Code4``), where the field name's prefix
        tells the references apart."""
        props = self.doc.schemas[child["model"]]["properties"]
        by_table: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for name, prop in props.items():
            ref = prop.get("x-references")
            if ref:
                table, _, column = str(ref).partition(".")
                by_table[table].append((name, column))
        out = []
        for table, pairs in by_table.items():
            columns = [c.lower() for _, c in pairs]
            if len(set(columns)) == len(columns):
                out.append((table, pairs))
                continue
            roles: dict[str, list[tuple[str, str]]] = defaultdict(list)
            for name, column in pairs:
                role = name[:-len(column)] if name.lower().endswith(column.lower()) else name
                roles[role].append((name, column))
            out += [(table, group) for group in roles.values()]
        return out

    def reference_parents(self, key_only: dict[str, list[tuple[str, dict[str, Any]]]]) -> None:
        for child in self.entities.values():
            for table, pairs in self.references(child):
                target_model = self.by_model_lower.get(table.lower())
                if target_model is None:
                    key_only[snake_case(table)].append((child["model"], {"pairs": pairs}))
                    continue
                target = self.entities[target_model]
                self.reference_entity(child, target, pairs)

    def reference_entity(self, child: dict[str, Any], target: dict[str, Any],
                         pairs: list[tuple[str, str]]) -> None:
        # Referenced columns are spelled as the database names them (Network_ID), key
        # fields as the API does (networkID): compared ignoring case and "_".
        key = self.key_columns(target)
        by_column = {_norm(c): name for name, c in pairs}
        if set(by_column) == {_norm(c) for c in key}:
            self.add_parent(child, target["table"], [by_column[_norm(c)] for c in key], key,
                            "x-references")
            return
        fields = [name for name, _ in pairs]
        covered = any(p["table"] == target["table"] and set(fields) <= set(p["fields"])
                      for p in child["parents"])
        if not covered:
            self.notes.append(f"{child['model']}: reference not enforced: "
                              f"{', '.join(fields)} -> {target['table']} "
                              f"({', '.join(by_column)}) is not its key ({', '.join(key)})")

    def key_only_tables(self, key_only: dict[str, list[tuple[str, dict[str, Any]]]]
                        ) -> dict[str, Any]:
        """Tables for references with no endpoint: keyed by the widest column set
        referred to; narrower references to them are reported, not enforced."""
        tables: dict[str, Any] = {}
        for table, uses in sorted(key_only.items()):
            if any(e["table"] == table for e in self.entities.values()):
                raise ImportFailed(f"key-only table {table} clashes with an entity's table")
            widest = max((u["pairs"] for _, u in uses), key=len)
            key = [c.lower() for _, c in widest]
            columns: dict[str, dict[str, Any]] = {}
            for model, use in uses:
                if not {c.lower() for _, c in use["pairs"]} <= set(key):
                    raise ImportFailed(f"{table}: references from {model} are not part of "
                                       f"its widest key {key}")
                props = self.doc.schemas[model]["properties"]
                for name, column in use["pairs"]:
                    column_decl = _field(column.lower(), props[name], False)
                    for detail in ("minLength", "nullable"):
                        column_decl.pop(detail, None)
                    known = columns.setdefault(column.lower(), column_decl)
                    if known["type"] != column_decl["type"]:
                        raise ImportFailed(f"{table}.{column.lower()}: referred to as "
                                           f"{known['type']} and as {column_decl['type']}")
                    widths = [known.get("maxLength"), column_decl.get("maxLength")]
                    if None in widths:
                        known.pop("maxLength", None)
                    else:
                        known["maxLength"] = max(w for w in widths if w is not None)
            tables[table] = {"key": key, "columns": [columns[c] for c in key]}
            for model, use in uses:
                child = self.entities[model]
                by_column = {c.lower(): n for n, c in use["pairs"]}
                if set(by_column) == set(key):
                    self.add_parent(child, table, [by_column[c] for c in key], key,
                                    "x-references")
                else:
                    self.notes.append(f"{model}: reference not enforced: "
                                      f"{', '.join(by_column.values())} -> {table} "
                                      f"({', '.join(by_column)}) is not its key")
        return tables

    def run(self) -> Imported:
        for model, path in sorted(self.doc.batch.items()):
            self.entities[model] = self.declare(model, path)
            self.by_model_lower[model.lower()] = model
        names = [e["name"] for e in self.entities.values()]
        tables = [e["table"] for e in self.entities.values()]
        for label, values in (("entity name", names), ("table", tables)):
            twice = sorted({v for v in values if values.count(v) > 1})
            if twice:
                raise ImportFailed(f"{label}s declared twice: {twice}")
        item_shapes = {_shape(e["item_path"]): m for m, e in self.entities.items()}
        for child in self.entities.values():
            self.nesting_parent(child, item_shapes)
        key_only: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
        self.reference_parents(key_only)
        key_only_tables = self.key_only_tables(key_only)
        for entity in self.entities.values():
            missing = [a for a in AUDIT_FIELDS if a not in {f["name"] for f in entity["fields"]}]
            if missing and len(missing) < len(AUDIT_FIELDS):
                self.notes.append(f"{entity['model']}: only some audit fields ({missing} "
                                  f"missing)")
            del entity["item_path"]
        declarations = {
            "generated_by": "upsert-worker schemas import OPENAPI_FILE (do not edit; change "
                            "schemas/overrides.toml and import again)",
            "source": {k: self.info[k] for k in ("title", "version", "x-source")
                       if k in self.info},
            "tables": key_only_tables,
            "entities": sorted(self.entities.values(), key=lambda e: e["name"]),
        }
        return Imported(declarations, list(dict.fromkeys(self.notes)))


def import_document(doc: dict[str, Any], overrides: Overrides) -> Imported:
    """The declarations of every batch operation of ``doc``, and the notes on each case a
    rule or an override resolved."""
    return _Importer(doc, overrides).run()


def render(declarations: dict[str, Any]) -> str:
    """Diff-friendly JSON: one field, parent or column per line, keys in a fixed order."""
    return _render(declarations, "") + "\n"


def _flat(value: Any) -> bool:
    if isinstance(value, dict):
        return all(not isinstance(v, (dict, list)) or (isinstance(v, list) and
                   all(not isinstance(x, (dict, list)) for x in v)) for v in value.values())
    if isinstance(value, list):
        return all(not isinstance(x, (dict, list)) for x in value)
    return True


def _one_line(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _render(value: Any, indent: str) -> str:
    if _flat(value):
        return _one_line(value)
    inner = indent + "  "
    if isinstance(value, dict):
        body = ",\n".join(f"{inner}{_one_line(k)}: {_render(v, inner)}"
                          for k, v in value.items())
        return "{\n" + body + "\n" + indent + "}"
    body = ",\n".join(inner + _render(v, inner) for v in value)
    return "[\n" + body + "\n" + indent + "]"


OVERRIDES = Path(__file__).with_name("overrides.toml")


def import_file(openapi: Path, output: Path, overrides: Path = OVERRIDES) -> tuple[bool, list[str]]:
    """Import ``openapi`` into ``output``: (whether the file changed, the notes).  Writes
    nothing when the declarations are already current, so running it twice changes
    nothing."""
    import tomllib

    doc = json.loads(openapi.read_text(encoding="utf-8"))
    with overrides.open("rb") as f:
        table = Overrides.from_dict(tomllib.load(f))
    imported = import_document(doc, table)
    text = render(imported.declarations)
    if output.exists() and output.read_text(encoding="utf-8") == text:
        return False, imported.notes
    output.write_text(text, encoding="utf-8")
    return True, imported.notes
