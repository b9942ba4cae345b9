"""The ``upsert-worker`` command line.  Thin: parse arguments, call one function each."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from worker.logs import configure_logging
from worker.redaction import redact, secrets_of
from worker.settings import Settings, load_settings


def _common() -> argparse.ArgumentParser:
    # --config is accepted anywhere on the command line: every parser, the top one and
    # each command's and subcommand's, knows it.  SUPPRESS: a parser whose part of the
    # line has none leaves it unset, instead of overwriting the one given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="TOML configuration file (default: $UPSERT_CONFIG, else built-in)")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="upsert-worker", parents=[common],
        description="Create-or-update batches from RabbitMQ into PostgreSQL.")
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("run", parents=[common],
                        help="consume batches until SIGTERM/SIGINT, then drain and exit 0")

    migrate = commands.add_parser("migrate", parents=[common],
                                  help="create or upgrade schema vbapi")
    migrate.add_argument("--database", metavar="NAME",
                         help="only this configured database (default: all)")

    publish = commands.add_parser("publish", parents=[common],
                                  help="publish a JSON array as a batch and print the reply")
    publish.add_argument("--database", required=True, metavar="NAME")
    publish.add_argument("--path", required=True, metavar="PATH")
    publish.add_argument("--user-id", metavar="U")
    publish.add_argument("--message-id", metavar="ID")
    publish.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                         help="how long to wait for the reply (default 60)")
    publish.add_argument("file", metavar="FILE", help="JSON array file, or - for stdin")

    status = commands.add_parser("status", parents=[common],
                                 help="queue depths and consumers; dead letters by status")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    dlq = commands.add_parser("dlq", parents=[common],
                              help="list, show, replay or purge dead-lettered batches")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_list = dlq_commands.add_parser("list", parents=[common],
                                       help="every dead letter, in queue order")
    dlq_list.add_argument("--json", action="store_true", help="machine-readable output")
    dlq_show = dlq_commands.add_parser("show", parents=[common],
                                       help="one dead letter: headers, properties, body")
    dlq_show.add_argument("id", metavar="ID")
    replay = dlq_commands.add_parser("replay", parents=[common],
                                     help="republish to vbapi; remove once confirmed")
    _add_selection(replay, with_status=True)
    replay.add_argument("--dry-run", action="store_true",
                        help="list what would be replayed, change nothing")
    dlq_purge = dlq_commands.add_parser("purge", parents=[common], help="delete dead letters")
    _add_selection(dlq_purge, with_status=False)
    dlq_purge.add_argument("--yes", action="store_true", help="really delete them")

    schemas = commands.add_parser("schemas", parents=[common], help="entity declarations")
    schemas_commands = schemas.add_subparsers(dest="schemas_command", required=True)
    schemas_import = schemas_commands.add_parser(
        "import", parents=[common],
        help="write the declarations of every batch operation of an OpenAPI 3 document")
    schemas_import.add_argument("openapi", metavar="OPENAPI_FILE")
    schemas_import.add_argument("--output", metavar="FILE",
                                help="where to write them (default: schemas/vbapi.json)")
    schemas_import.add_argument("--check", action="store_true",
                                help="write nothing; exit 1 if the declarations would change")

    commands.add_parser("gateway", parents=[common],
                        help="serve the API's batch paths over HTTP until SIGTERM/SIGINT")

    docs = commands.add_parser("docs", parents=[common],
                               help="documents generated from the declarations")
    docs_commands = docs.add_subparsers(dest="docs_command", required=True)
    for name, about in (("endpoints", "the table of every endpoint (markdown)"),
                        ("asyncapi", "the AsyncAPI 3.0 document for AMQP producers")):
        document = docs_commands.add_parser(name, parents=[common], help=about)
        document.add_argument("--output", metavar="FILE",
                              help="write it here (default: standard output)")

    return parser


def _add_selection(parser: argparse.ArgumentParser, *, with_status: bool) -> None:
    chosen = parser.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--all", action="store_true", help="every dead letter")
    chosen.add_argument("--id", nargs="+", action="extend", metavar="ID",
                        help="these dead letters (ids from `dlq list`)")
    if with_status:
        chosen.add_argument("--status", type=int, metavar="N",
                            help="those dead-lettered with error status N")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(getattr(args, "config", None))
    except Exception as e:
        # The message names keys, never values (worker.settings.describe).
        print(f"upsert-worker: bad configuration: {e}", file=sys.stderr)
        return 2
    configure_logging(settings.log, secrets_of(settings))
    command = args.command
    if command in ("dlq", "schemas", "docs"):
        command = f"{command} {getattr(args, command + '_command')}"
    try:
        return int(_HANDLERS[command](settings, args))
    except Exception as e:
        # What Python would print, less the secrets a driver's message may quote.
        print(_masked(settings, "".join(traceback.format_exception(e))), file=sys.stderr,
              end="")
        return 1


def _masked(settings: Settings, text: object) -> str:
    return redact(str(text), secrets_of(settings))


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from worker.service import Worker

    _tune_garbage_collector()

    async def run() -> None:
        worker = Worker(settings)
        worker.install_signal_handlers()
        await worker.run()

    asyncio.run(run())
    return 0


# Collections of the youngest generation happen after this many new container objects
# instead of 700.  A large batch makes tens of thousands of dicts and lists, almost all
# freed by reference counting, so with the default threshold the collector runs dozens of
# times per batch for nothing (the saving is measured in BENCHMARKS.md).
GC_YOUNG_THRESHOLD = 50_000


def _tune_garbage_collector() -> None:
    # What is alive once started (modules, models, settings) lives as long as the process:
    # moved out of the collector's way, it is never traversed again.
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 50, 100)


def cmd_gateway(settings: Settings, args: argparse.Namespace) -> int:
    import uvloop

    from worker.http.gateway import GatewayRefused, serve

    try:
        # uvloop: the gateway's event loop in C, as uvicorn runs it by default.
        uvloop.run(serve(settings))
    except GatewayRefused as e:
        print(f"upsert-worker gateway: refusing to start: {e}", file=sys.stderr)
        return 2
    return 0


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from worker.store.migrations import migrate

    names = [args.database] if args.database else list(settings.databases)
    unknown = [n for n in names if n not in settings.databases]
    if unknown:
        print(f"upsert-worker: database not configured: {', '.join(unknown)}", file=sys.stderr)
        return 2

    async def run() -> int:
        failed = 0
        for name in names:
            try:
                applied = await migrate(settings.databases[name].dsn.get_secret_value())
            except Exception as e:
                print(f"{name}: failed: {_masked(settings, e)}", file=sys.stderr)
                failed += 1
                continue
            print(f"{name}: " + ("; ".join(applied) if applied else "up to date"))
        return 1 if failed else 0

    return asyncio.run(run())


def cmd_publish(settings: Settings, args: argparse.Namespace) -> int:
    from worker.cli.publishing import format_reply, publish_batch

    body = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    try:
        reply = asyncio.run(publish_batch(
            settings, database=args.database, path=args.path, body=body,
            user_id=args.user_id, message_id=args.message_id, timeout_s=args.timeout))
    except TimeoutError:
        print(f"upsert-worker: no reply within {args.timeout:g} s (is a worker running?)",
              file=sys.stderr)
        return 3
    except Exception as e:
        print(f"upsert-worker: publish failed: {_masked(settings, e)}", file=sys.stderr)
        return 2
    print(format_reply(reply.body))
    return 0 if reply.status == 207 else 1


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from worker.cli.operations import print_status
    return print_status(settings, as_json=args.json)


def cmd_dlq_list(settings: Settings, args: argparse.Namespace) -> int:
    from worker.cli.operations import print_dead_letters
    return print_dead_letters(settings, as_json=args.json)


def cmd_dlq_show(settings: Settings, args: argparse.Namespace) -> int:
    from worker.cli.operations import print_dead_letter
    return print_dead_letter(settings, args.id)


def cmd_dlq_replay(settings: Settings, args: argparse.Namespace) -> int:
    from worker.cli.operations import replay_dead_letters
    return replay_dead_letters(settings, all_=args.all, ids=args.id or [],
                               status=args.status, dry_run=args.dry_run)


def cmd_dlq_purge(settings: Settings, args: argparse.Namespace) -> int:
    from worker.cli.operations import purge_dead_letters
    return purge_dead_letters(settings, all_=args.all, ids=args.id or [], yes=args.yes)


def cmd_schemas_import(settings: Settings, args: argparse.Namespace) -> int:
    import tempfile

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


def cmd_docs(settings: Settings, args: argparse.Namespace) -> int:
    """A document generated from the declarations, to a file or standard output."""
    from schemas.asyncapi import render_asyncapi
    from schemas.docs import render_endpoints
    from schemas.registry import default_registry

    render = {"endpoints": render_endpoints, "asyncapi": render_asyncapi}[args.docs_command]
    text = render(default_registry())
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


_HANDLERS = {"run": cmd_run, "migrate": cmd_migrate, "publish": cmd_publish,
             "gateway": cmd_gateway,
             "schemas import": cmd_schemas_import, "status": cmd_status,
             "dlq list": cmd_dlq_list, "dlq show": cmd_dlq_show,
             "dlq replay": cmd_dlq_replay, "dlq purge": cmd_dlq_purge,
             "docs endpoints": cmd_docs, "docs asyncapi": cmd_docs}
