"""How the document's names become the declarations' names: by rule, or by the reviewed
override table (``schemas/overrides.toml``) where no rule can tell.

A path parameter maps to a field by name, ignoring case and ``_``.  Where it does not, a
numbered field (``{exCode}`` -> ``ex_Code1``), then the abbreviations of the override table
(``{commActivityKey}`` -> ``commissionActivity_Key``), then its explicit entries resolve
it.  Every case a rule or an override resolved is noted; one that nothing resolves is an
:class:`ImportFailed`.  Nothing is guessed silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

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


def snake_case(name: str) -> str:
    """``GroupPlanYear`` -> ``group_plan_year``, ``DRGCodes`` -> ``drg_codes``."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def norm(name: str) -> str:
    """A name as names are compared: ignoring case and ``_``."""
    return name.replace("_", "").lower()


def params(path: str) -> list[str]:
    """The parameters of a path template, in order."""
    return _PARAM.findall(path)


def shape(path: str) -> str:
    """A path template with its parameters unnamed: ``/a/{}/b``."""
    return _PARAM.sub("{}", path)


class Naming:
    """The rules and the override table, noting each case they resolve in ``notes``."""

    def __init__(self, overrides: Overrides, notes: list[str]) -> None:
        self.overrides = overrides
        self.notes = notes

    def entity_name(self, model: str) -> str:
        return self.overrides.entity_names.get(model, model)

    def scope(self, model: str) -> list[str]:
        """The path parameters that only scope the model's paths (no field of its own)."""
        scope = list(self.overrides.scope.get(model, []))
        for param in scope:
            self.notes.append(f"{model}: {{{param}}} scopes the path (override: not a field)")
        return scope

    def item_path(self, model: str, paths: list[str]) -> str:
        """Of the model's single-item ``paths``, the one that holds its key."""
        chosen = self.overrides.item_paths.get(model)
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
        if norm(param) in fields:
            return fields[norm(param)]
        override = self.overrides.parameters.get(model, {}).get(param)
        if override is not None:
            if override not in fields.values():
                raise ImportFailed(f"{model}: override {{{param}}} -> {override}: no such field")
            self.notes.append(f"{model}: {{{param}}} -> {override} (override)")
            return override
        numbered = fields.get(norm(param) + "1")
        if numbered is not None:
            self.notes.append(f"{model}: {{{param}}} -> {numbered} (rule: numbered field)")
            return numbered
        words = _WORDS.findall(param)
        expanded = "".join(self.overrides.abbreviations.get(w.lower(), w) for w in words)
        if expanded != param and norm(expanded) in fields:
            found = fields[norm(expanded)]
            self.notes.append(f"{model}: {{{param}}} -> {found} (rule: abbreviations)")
            return found
        raise ImportFailed(f"{model}: path parameter {{{param}}} maps to no field; add it to "
                           f"[parameters.{model}] or [scope] in schemas/overrides.toml")
