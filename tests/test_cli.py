"""The console script as a person runs it: migrate, publish, --config anywhere, env overrides."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import asyncpg
import orjson

from schemas.registry import default_registry
from schemas.samples import Parents, make_item, path_for
from tests import samples
from tests.configs import write_toml
from tests.running import running
from tests.samples import insert_parents
from tests.services import amqp_url
from worker.cli import build_parser
from worker.settings import Settings, load_settings


def write_config(path: Path, vhost: str, dsn: str) -> Path:
    return write_toml(path, {"amqp": {"url": amqp_url(vhost)},
                             "databases": {"demo": {"dsn": dsn}}, "metrics": {"port": 0}})


async def run_cli(*args: str, stdin: bytes | None = None,
                  env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", *args, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})})
    out, err = await asyncio.wait_for(process.communicate(stdin), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def test_config_is_accepted_anywhere_among_options() -> None:
    parser = build_parser()
    args = parser.parse_args(["publish", "--database", "d", "--config", "x.toml", "--path",
                              "/p", "f.json"])
    assert args.config == "x.toml" and args.path == "/p"
    assert parser.parse_args(["migrate", "--config", "y.toml"]).config == "y.toml"


def test_file_then_environment_precedence(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", "v", "postgresql://127.0.0.1/a")
    os.environ["UPSERT_LIMITS__MAX_ITEMS"] = "7"
    try:
        settings = load_settings(config)
    finally:
        del os.environ["UPSERT_LIMITS__MAX_ITEMS"]
    assert settings.limits.max_items == 7
    assert settings.databases["demo"].dsn.get_secret_value() == "postgresql://127.0.0.1/a"
    assert "guest" not in repr(settings)  # secrets stay hidden
    assert Settings().databases["demo"].dsn.get_secret_value().endswith("/vbapi_demo")


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


async def test_bad_configuration_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[limits]\nmax_items = -1\n")
    code, _, err = await run_cli("migrate", "--config", str(bad))
    assert code == 2 and "bad configuration" in err
    code, _, err = await run_cli("migrate", "--config", str(tmp_path / "missing.toml"))
    assert code == 2 and "not found" in err


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
