"""Write the Kubernetes JSON schemas the deploy tests validate against (see README.md).

    python tests/data/deploy/vendor_kubernetes_schemas.py SCHEMA_DIR

SCHEMA_DIR is a ``v1.NN.0-local-strict`` folder of the PyPI package kubernetes-validate.
For each kind the manifests use, its schema; of ``_definitions.json``, the definitions
those reach (which include the few the operators' CRD subsets refer to: Affinity,
ResourceRequirements, ...); descriptions left out.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

KINDS = ["namespace-v1", "configmap-v1", "secret-v1", "service-v1", "deployment-apps-v1",
         "job-batch-v1", "poddisruptionbudget-policy-v1"]
OUT = Path(__file__).resolve().parent / "kubernetes"


def without_descriptions(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_descriptions(v) for k, v in value.items() if k != "description"}
    if isinstance(value, list):
        return [without_descriptions(v) for v in value]
    return value


def references(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref":
                yield item.split("#/$defs/")[1]
            else:
                yield from references(item)
    elif isinstance(value, list):
        for item in value:
            yield from references(item)


def main(source: Path) -> None:
    document = json.loads((source / "_definitions.json").read_text())
    definitions = document["$defs"]
    OUT.mkdir(exist_ok=True)
    pending: list[str] = []
    for kind in KINDS:
        schema = json.loads((source / f"{kind}.json").read_text())
        pending += references(schema)
        text = json.dumps(without_descriptions(schema), indent=1, sort_keys=True)
        (OUT / f"{kind}.json").write_text(text + "\n")
    needed: set[str] = set()
    while pending:
        name = pending.pop()
        if name not in needed:
            needed.add(name)
            pending += references(definitions[name])
    pruned = {key: value for key, value in document.items() if key != "$defs"}
    pruned["$defs"] = {name: without_descriptions(definitions[name]) for name in needed}
    text = json.dumps(pruned, indent=1, sort_keys=True)
    (OUT / "_definitions.json").write_text(text + "\n")
    print(f"{len(KINDS)} kinds, {len(needed)} definitions -> {OUT}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
