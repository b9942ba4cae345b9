"""``schemas import OPENAPI_FILE``: the entity declarations of every batch operation."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from worker.cli.common import Commands, add_command, add_group
from worker.settings import Settings


def register(commands: Commands) -> None:
    subcommands = add_group(commands, "schemas", about="entity declarations")
    schemas_import = add_command(
        subcommands, "import", cmd_schemas_import,
        about="write the declarations of every batch operation of an OpenAPI 3 document")
    schemas_import.add_argument("openapi", metavar="OPENAPI_FILE")
    schemas_import.add_argument("--output", metavar="FILE",
                                help="where to write them (default: schemas/vbapi.json)")
    schemas_import.add_argument("--check", action="store_true",
                                help="write nothing; exit 1 if the declarations would change")


def cmd_schemas_import(settings: Settings, args: argparse.Namespace) -> int:
    from schemas.importer import ImportFailed, import_file
    from schemas.registry import DECLARATIONS, load_declarations

    output = Path(args.output) if args.output else DECLARATIONS
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / output.name
        if output.exists():
            target.write_bytes(output.read_bytes())
        try:
            changed, notes = import_file(Path(args.openapi), target)
            registry = load_declarations(target)  # checked as the worker will check them
        except (ImportFailed, ValueError, OSError) as e:
            print(f"upsert-worker: import failed: {e}", file=sys.stderr)
            return 2
        for note in notes:
            print(f"resolved: {note}")
        print(f"{len(registry.entities)} entities, {len(registry.tables)} key-only tables: "
              f"{output} " + ("changed" if changed else "unchanged"))
        if args.check:
            return 1 if changed else 0
        if changed:
            output.write_bytes(target.read_bytes())
    return 0
