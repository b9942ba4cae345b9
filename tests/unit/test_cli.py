"""The console script's command line and configuration, with no services: --config
anywhere, env overrides, and a configuration refused (exit 2) when a key is misspelt or a
rule broken, never echoing a password.  What it does against the broker and the database is
tests/integration/test_cli.py.

A refused configuration is checked in this process (``upsert_worker``): refused, the command
stops before it sets up logging or reaches anything; a few runs go through a process of its
own, as a person's do (``run_cli``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.command_line import run_cli, write_config
from worker.cli import build_parser, main
from worker.settings import AmqpSettings, ConfigurationError, Settings, load_settings

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def upsert_worker(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    """``upsert_worker(*ARGS, env={...})``: the console script's ``main(ARGS)`` in this
    process: exit status, stdout, stderr.  The environment is this one less its UPSERT_
    settings, plus ``env``.  Only for a configuration it refuses (exit 2), before it sets up
    logging or reaches for a service."""

    def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        with monkeypatch.context() as m:
            for name in [n for n in os.environ if n.startswith("UPSERT_")]:
                m.delenv(name)
            for name, value in (env or {}).items():
                m.setenv(name, value)
            capsys.readouterr()
            code = main(list(args))
        out, err = capsys.readouterr()
        assert code == 2, (code, out, err)
        return code, out, err

    return run


def test_config_is_accepted_anywhere_among_options() -> None:
    parser = build_parser()
    args = parser.parse_args(["publish", "--database", "d", "--config", "x.toml", "--path",
                              "/p", "f.json"])
    assert args.config == "x.toml" and args.path == "/p"
    assert parser.parse_args(["migrate", "--config", "y.toml"]).config == "y.toml"


@pytest.mark.parametrize("argv", [
    ["--config", "f.toml", "dlq", "list"],
    ["dlq", "list", "--json", "--config", "f.toml"],
    ["dlq", "--config", "f.toml", "list"],
    ["--config", "f.toml", "run"],
    ["schemas", "--config", "f.toml", "import", "openapi.json"],
    ["docs", "--config", "f.toml", "endpoints"],
    ["--config", "other.toml", "dlq", "--config", "f.toml", "list"],  # the last one given
])
def test_config_is_accepted_anywhere_on_the_command_line(argv: list[str]) -> None:
    assert build_parser().parse_args(argv).config == "f.toml"


@pytest.mark.parametrize(("toml", "key"), [
    ("[amqp]\nprefetch_cont = 3\n", "amqp.prefetch_cont"),
    ("[databases.demo]\ndsn = 'postgresql://127.0.0.1/x'\npool_max_sise = 4\n",
     "databases.demo.pool_max_sise"),
    ("[limits]\nmax_itemz = 5\n", "limits.max_itemz"),
    ("[retry]\ndelay_s = [1.0]\n", "retry.delay_s"),
    ("[worker]\nshutdown_grace = 1.0\n", "worker.shutdown_grace"),
    ("[log]\nlevl = 'debug'\n", "log.levl"),
    ("[metrics]\nprot = 1\n", "metrics.prot"),
    ("[gateway]\nlisten_on = '127.0.0.1:1'\n", "gateway.listen_on"),
])
def test_a_misspelt_key_of_a_section_is_refused_by_name(tmp_path: Path, toml: str,
                                                        key: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(toml)
    with pytest.raises(ConfigurationError, match=f"^{key}: unknown key$"):
        load_settings(config)


def test_a_misspelt_key_exits_2_from_the_file_or_the_environment(tmp_path: Path,
                                                                 upsert_worker: Run) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[databases.demo]\ndsn = 'postgresql://127.0.0.1:1/x'\n"
                      "comand_timeout_s = 5\n")
    code, _, err = upsert_worker("migrate", "--config", str(config))
    assert code == 2 and "databases.demo.comand_timeout_s: unknown key" in err
    config.write_text("[databases.demo]\ndsn = 'postgresql://127.0.0.1:1/x'\n")
    code, _, err = upsert_worker("migrate", "--config", str(config),
                                 env={"UPSERT_AMQP__PUBLISH_TIMEOUT": "5"})
    assert code == 2 and "amqp.publish_timeout: unknown key" in err


PASSWORD = "s3cret-Pa55word"


@pytest.mark.parametrize(("toml", "key"), [
    # A misspelt required key: pydantic quoted the whole table it is missing from.
    (f"[databases.demo]\ndns = 'postgresql://root:{PASSWORD}@127.0.0.1/x'\n",
     "databases.demo.dns"),
    # A bad entry in a list of broker URLs: pydantic quoted the list.
    (f"[amqp]\nurl = ['amqp://guest:{PASSWORD}@127.0.0.1/', 5]\n", "amqp.url"),
    # A DSN of the wrong type.
    (f"[databases.demo]\ndsn = {{ url = 'postgresql://root:{PASSWORD}@127.0.0.1/x' }}\n",
     "databases.demo.dsn"),
    # An invalid value next to a password.
    (f"[amqp]\nurl = 'amqp://guest:{PASSWORD}@127.0.0.1/'\nprefetch_count = 0\n",
     "amqp.prefetch_count"),
    (f"[amqp]\nmanagement_url = ['http://guest:{PASSWORD}@127.0.0.1:15672']\n",
     "amqp.management_url"),
])
def test_a_configuration_error_names_the_key_never_a_password(
        tmp_path: Path, toml: str, key: str, upsert_worker: Run) -> None:
    config = tmp_path / "c.toml"
    config.write_text(toml)
    code, out, err = upsert_worker("migrate", "--config", str(config))
    assert code == 2 and "bad configuration:" in err and key in err, err
    assert PASSWORD not in out + err


def test_an_environment_override_error_never_echoes_a_password(upsert_worker: Run) -> None:
    code, out, err = upsert_worker(
        "migrate", env={"UPSERT_AMQP__URL": f'["amqp://guest:{PASSWORD}@127.0.0.1/", 5]',
                        "UPSERT_DATABASES__DEMO__DSN": "postgresql://127.0.0.1:1/x"})
    assert code == 2 and "bad configuration: amqp.url" in err
    assert PASSWORD not in out + err


async def test_producers_lists_need_an_explicit_signing_key(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[databases.demo]\ndsn = 'postgresql://127.0.0.1:1/x'\n"
                      "producers = ['acme']\n")
    code, _, err = await run_cli("migrate", "--config", str(config))
    assert code == 2 and "amqp.signing_key must be set" in err and "'demo'" in err
    code, _, err = await run_cli("migrate", "--config", str(config),
                                 env={"UPSERT_AMQP__SIGNING_KEY": "k"})
    assert code == 1 and "bad configuration" not in err  # loads; the database is down


def test_an_unset_signing_key_derives_from_nothing_secret() -> None:
    """Without producers lists the key may stay unset; it then depends on no password
    (the same whatever the broker's), and is not the one the URL once gave."""
    one = AmqpSettings(url="amqp://guest:first-password@127.0.0.1/")
    other = AmqpSettings(url="amqp://guest:other-password@127.0.0.1/")
    assert one.signing_key_bytes() == other.signing_key_bytes()
    assert len(one.signing_key_bytes()) == 32
    assert Settings(amqp={"signing_key": "k"}).amqp.signing_key_bytes() == b"k"


def test_no_database_may_take_the_label_of_unconfigured_ones() -> None:
    with pytest.raises(ValueError, match="no database may be named 'unknown'"):
        Settings(databases={"unknown": {"dsn": "postgresql://127.0.0.1/x"}})


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


async def test_bad_configuration_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[limits]\nmax_items = -1\n")
    code, _, err = await run_cli("migrate", "--config", str(bad))
    assert code == 2 and "bad configuration" in err
    code, _, err = await run_cli("migrate", "--config", str(tmp_path / "missing.toml"))
    assert code == 2 and "not found" in err
