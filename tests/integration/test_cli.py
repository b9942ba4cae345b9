"""The console script as a person runs it against the broker and the database: migrate,
publish, dlq with --config anywhere.  Its command line and configuration errors, which need
no services, are tests/unit/test_cli.py."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import orjson

from schemas.registry import default_registry
from tests.support import samples
from tests.support.command_line import run_cli, write_config
from tests.support.running import running
from tests.support.samples import Parents, insert_parents, make_item, path_for
from worker.settings import Settings


async def test_config_before_the_command_or_its_subcommand(tmp_path: Path, vhost: str,
                                                            dsn: str) -> None:
    config = str(write_config(tmp_path / "worker.toml", vhost, dsn))
    for argv in (["--config", config, "dlq", "list"], ["dlq", "--config", config, "list"]):
        code, out, err = await run_cli(*argv)
        assert (code, out.strip()) == (0, "0 dead letters"), err


async def test_migrate_and_publish_commands(tmp_path: Path, vhost: str, dsn: str,
                                            settings: Settings) -> None:
    config = str(write_config(tmp_path / "worker.toml", vhost, dsn))
    code, out, _ = await run_cli("migrate", "--config", config)
    assert (code, out.strip()) == (0, "demo: up to date")

    batch = tmp_path / "batch.json"
    batch.write_bytes(orjson.dumps([samples.armor(1), samples.armor(2.5)]))
    async with running(settings):
        code, out, err = await run_cli("publish", "--database", "demo", "--path",
                                       samples.ARMOR_PATH, str(batch), "--config", config,
                                       "--message-id", "cli-1")
        assert code == 0, err
        reply = orjson.loads(out)
        assert [d["status"] for d in reply["data"]] == [201, 400]
        # stdin, and the same message id again: answered from the recorded reply
        code, again, _ = await run_cli("publish", "--database", "demo", "--path",
                                       samples.ARMOR_PATH, "-", "--message-id", "cli-1",
                                       stdin=batch.read_bytes(), env={"UPSERT_CONFIG": config})
        assert code == 0 and orjson.loads(again) == reply
        code, out, _ = await run_cli("publish", "--config", config, "--database", "nope",
                                     "--path", samples.ARMOR_PATH, str(batch))
        assert code == 1 and orjson.loads(out)["error"]["status"] == 404
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM vbapi.armor_code_ex_code") == 1
    finally:
        await conn.close()


async def test_publish_without_a_worker_times_out(tmp_path: Path, vhost: str, dsn: str) -> None:
    config = str(write_config(tmp_path / "worker.toml", vhost, dsn))
    batch = tmp_path / "batch.json"
    batch.write_bytes(b"[]")
    code, _, err = await run_cli("publish", "--config", config, "--database", "demo",
                                 "--path", samples.ARMOR_PATH, "--timeout", "0.5", str(batch))
    assert code == 3 and "no reply within 0.5 s" in err


async def test_publish_command_on_imported_endpoints(tmp_path: Path, vhost: str, dsn: str,
                                                     settings: Settings) -> None:
    """Endpoints that only the import declares answer through `publish` as the seeds do:
    a nested one with a date-time key part (echoed as sent) and the widest one."""
    registry = default_registry()
    config = str(write_config(tmp_path / "worker.toml", vhost, dsn))
    conn = await asyncpg.connect(dsn)
    cases = []
    for n, name in enumerate(("ProviderPayee", "ClaimBatch")):
        entity = registry.by_name(name)
        item = make_item(entity, 500 + n)
        parents = Parents(registry)
        parents.need(entity, item)
        await insert_parents(conn, parents)
        cases.append((entity, item))
    await conn.close()
    async with running(settings):
        for entity, item in cases:
            batch = tmp_path / f"{entity.name}.json"
            batch.write_bytes(orjson.dumps([item, {**item, "no_Such": 1}]))
            code, out, err = await run_cli("publish", "--config", config, "--database", "demo",
                                           "--path", path_for(entity, item), str(batch))
            assert code == 0, err
            reply = orjson.loads(out)["data"]
            assert reply[0] == {"id": [{"key": k, "value": item[k]} for k in entity.key],
                                "status": 201, "body": "Created"}
            assert (reply[1]["status"], reply[1]["body"]) == (400, "no_Such: unknown field")
    assert any(isinstance(item[k], str) and "T" in item[k]
               for entity, item in cases for k in entity.key)  # a date-time key was sent
