"""The parents of the imported entities: the records that must exist before an item can be
written.

They come from nesting (the entity whose item path is the batch path's prefix) and from
``x-references`` (a foreign key to the referenced entity's table, or to a key-only table
where the reference has no endpoint).  A reference that cannot be enforced (it is not the
target's key, or its types differ) is noted, not enforced.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from schemas.importer.document import field_declaration
from schemas.importer.naming import ImportFailed, norm, params, shape, snake_case

# (field, referenced column) pairs of one reference.
Pairs = list[tuple[str, str]]
# Per key-only table, the references to it: (model, its pairs).
KeyOnlyUses = dict[str, list[tuple[str, Pairs]]]


def _key_columns(entity: dict[str, Any]) -> list[str]:
    return [k.lower() for k in entity["key"]]


def _merge_column(table: str, columns: dict[str, dict[str, Any]],
                  column: dict[str, Any]) -> None:
    """Add a key-only table's column as one reference declares it; one referred to twice
    must have one type, and takes the wider length (or none)."""
    for detail in ("minLength", "nullable"):
        column.pop(detail, None)
    known = columns.setdefault(column["name"], column)
    if known["type"] != column["type"]:
        raise ImportFailed(f"{table}.{column['name']}: referred to as "
                           f"{known['type']} and as {column['type']}")
    widths = [known.get("maxLength"), column.get("maxLength")]
    if None in widths:
        known.pop("maxLength", None)
    else:
        known["maxLength"] = max(w for w in widths if w is not None)


class ParentFinder:
    """Adds to each entity declaration of ``entities`` (model -> declaration) its parents,
    noting in ``notes`` each one it does not enforce."""

    def __init__(self, entities: dict[str, dict[str, Any]], schemas: dict[str, Any],
                 notes: list[str]) -> None:
        self.entities = entities
        self.schemas = schemas
        self.notes = notes
        self.by_model_lower = {model.lower(): model for model in entities}

    # -- nesting -------------------------------------------------------------------
    def nesting_parent(self, child: dict[str, Any], item_shapes: dict[str, str]) -> None:
        prefix = child["path"].rsplit("/", 1)[0]
        parent_model = item_shapes.get(shape(prefix))
        if parent_model is None:
            return
        parent = self.entities[parent_model]
        parent_params = params(parent["item_path"])
        by_param = dict(zip(parent_params, params(prefix), strict=True))
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
        self.add_parent(child, parent["table"], fields, _key_columns(parent), "nesting")

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

    # -- x-references --------------------------------------------------------------
    def references(self, child: dict[str, Any]) -> list[tuple[str, Pairs]]:
        """The child's x-references, grouped by referenced table and role: fields that
        refer to one table together make one composite reference, unless the same column
        is referred to twice (``ex_Code1`` .. ``ex_Code4``), where the field name's prefix
        tells the references apart."""
        props = self.schemas[child["model"]]["properties"]
        by_table: dict[str, Pairs] = defaultdict(list)
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
            roles: dict[str, Pairs] = defaultdict(list)
            for name, column in pairs:
                role = name[:-len(column)] if name.lower().endswith(column.lower()) else name
                roles[role].append((name, column))
            out += [(table, group) for group in roles.values()]
        return out

    def reference_parents(self) -> KeyOnlyUses:
        """Add the parents x-references name; the references to tables with no endpoint
        are returned, for :meth:`key_only_tables`."""
        key_only: KeyOnlyUses = defaultdict(list)
        for child in self.entities.values():
            for table, pairs in self.references(child):
                target_model = self.by_model_lower.get(table.lower())
                if target_model is None:
                    key_only[snake_case(table)].append((child["model"], pairs))
                    continue
                self.reference_entity(child, self.entities[target_model], pairs)
        return key_only

    def reference_entity(self, child: dict[str, Any], target: dict[str, Any],
                         pairs: Pairs) -> None:
        # Referenced columns are spelled as the database names them (Network_ID), key
        # fields as the API does (networkID): compared ignoring case and "_".
        key = _key_columns(target)
        by_column = {norm(c): name for name, c in pairs}
        if set(by_column) == {norm(c) for c in key}:
            self.add_parent(child, target["table"], [by_column[norm(c)] for c in key], key,
                            "x-references")
            return
        fields = [name for name, _ in pairs]
        covered = any(p["table"] == target["table"] and set(fields) <= set(p["fields"])
                      for p in child["parents"])
        if not covered:
            self.notes.append(f"{child['model']}: reference not enforced: "
                              f"{', '.join(fields)} -> {target['table']} "
                              f"({', '.join(by_column)}) is not its key ({', '.join(key)})")

    # -- key-only tables -----------------------------------------------------------
    def key_only_tables(self, key_only: KeyOnlyUses) -> dict[str, Any]:
        """Tables for references with no endpoint: keyed by the widest column set
        referred to; narrower references to them are reported, not enforced."""
        tables: dict[str, Any] = {}
        for table, uses in sorted(key_only.items()):
            if any(e["table"] == table for e in self.entities.values()):
                raise ImportFailed(f"key-only table {table} clashes with an entity's table")
            widest = max((pairs for _, pairs in uses), key=len)
            key = [c.lower() for _, c in widest]
            columns = self._key_only_columns(table, key, uses)
            tables[table] = {"key": key, "columns": [columns[c] for c in key]}
            for model, pairs in uses:
                self._refer_to_key_only(model, table, key, pairs)
        return tables

    def _key_only_columns(self, table: str, key: list[str],
                          uses: list[tuple[str, Pairs]]) -> dict[str, dict[str, Any]]:
        columns: dict[str, dict[str, Any]] = {}
        for model, pairs in uses:
            if not {c.lower() for _, c in pairs} <= set(key):
                raise ImportFailed(f"{table}: references from {model} are not part of "
                                   f"its widest key {key}")
            props = self.schemas[model]["properties"]
            for name, column in pairs:
                _merge_column(table, columns,
                              field_declaration(column.lower(), props[name], False))
        return columns

    def _refer_to_key_only(self, model: str, table: str, key: list[str],
                           pairs: Pairs) -> None:
        by_column = {c.lower(): n for n, c in pairs}
        if set(by_column) == set(key):
            self.add_parent(self.entities[model], table, [by_column[c] for c in key], key,
                            "x-references")
        else:
            self.notes.append(f"{model}: reference not enforced: "
                              f"{', '.join(by_column.values())} -> {table} "
                              f"({', '.join(by_column)}) is not its key")
