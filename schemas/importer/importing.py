"""The import as a whole: every batch operation declared as an entity, then the parents
found, then the key-only tables; and the file written."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.entity import ENTRY_DATE, ENTRY_USER, UPDATE_DATE, UPDATE_USER
from schemas.importer.document import Document, field_declaration
from schemas.importer.naming import ImportFailed, Naming, Overrides, norm, params, shape, snake_case
from schemas.importer.references import ParentFinder
from schemas.importer.rendering import render

AUDIT_FIELDS = (ENTRY_DATE, ENTRY_USER, UPDATE_DATE, UPDATE_USER)
OVERRIDES = Path(__file__).parent.parent / "overrides.toml"


@dataclass
class Imported:
    declarations: dict[str, Any]
    notes: list[str]


class _Importer:
    def __init__(self, doc: dict[str, Any], overrides: Overrides) -> None:
        self.doc = Document(doc)
        self.info = doc.get("info", {})
        self.notes: list[str] = []
        self.naming = Naming(overrides, self.notes)
        self.entities: dict[str, dict[str, Any]] = {}   # model -> declaration

    def declare(self, model: str, batch_path: str) -> dict[str, Any]:
        """The declaration of the entity of ``model``, its parents still to be found."""
        schema = self.doc.schemas.get(model)
        if schema is None:
            raise ImportFailed(f"{batch_path}: model {model} is not in components.schemas")
        props: dict[str, Any] = schema.get("properties", {})
        fields = {norm(n): n for n in props}
        scope = self.naming.scope(model)
        item_path = self.naming.item_path(model, self.doc.items.get(model, []))
        key = [self.naming.resolve(model, p, fields) for p in params(item_path)
               if p not in scope]
        bindings = {p: self.naming.resolve(model, p, fields) for p in params(batch_path)
                    if p not in scope}
        required = set(schema.get("required", []))
        for name in key:
            if name not in required:
                self.notes.append(f"{model}: key field {name} made required (the model "
                                  f"leaves it optional)")
                required.add(name)
        name = self.naming.entity_name(model)
        return {
            "name": name, "model": model, "path": batch_path, "item_path": item_path,
            "table": snake_case(name), "key": key, "bindings": bindings, "scope": scope,
            "parents": [],
            "fields": [field_declaration(n, p, n in required) for n, p in props.items()],
        }

    def _check_unique(self) -> None:
        names = [e["name"] for e in self.entities.values()]
        tables = [e["table"] for e in self.entities.values()]
        for label, values in (("entity name", names), ("table", tables)):
            twice = sorted({v for v in values if values.count(v) > 1})
            if twice:
                raise ImportFailed(f"{label}s declared twice: {twice}")

    def _find_parents(self) -> dict[str, Any]:
        """Every entity's parents; the key-only tables, by name."""
        finder = ParentFinder(self.entities, self.doc.schemas, self.notes)
        item_shapes = {shape(e["item_path"]): m for m, e in self.entities.items()}
        for child in self.entities.values():
            finder.nesting_parent(child, item_shapes)
        return finder.key_only_tables(finder.reference_parents())

    def run(self) -> Imported:
        for model, path in sorted(self.doc.batch.items()):
            self.entities[model] = self.declare(model, path)
        self._check_unique()
        key_only_tables = self._find_parents()
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
