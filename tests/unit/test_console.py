"""The console's rules that need no services: loopback only without operators (the
gateway's rule), keys given as digests, the command refusing to start."""

from __future__ import annotations

import pytest

from worker.cli import main
from worker.console.auth import ConsoleRefused, check_exposure, check_key
from worker.console.letters import page_number
from worker.console.sampling import counters, shown_url
from worker.settings import ConfigurationError, ConsoleSettings, load_settings

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("listen", ["0.0.0.0:8081", "[::]:8081", "console.example:8081"])
def test_without_operators_only_loopback(listen: str) -> None:
    with pytest.raises(ConsoleRefused, match="not loopback"):
        check_exposure(ConsoleSettings(listen=listen))
    check_exposure(ConsoleSettings(listen=listen, operators={"alice": DIGEST}))


@pytest.mark.parametrize("listen", ["127.0.0.1:8081", "[::1]:8081", "localhost:8081"])
def test_loopback_needs_no_operators(listen: str) -> None:
    check_exposure(ConsoleSettings(listen=listen))


def test_keys_are_digests_and_the_listen_value_is_checked(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.setenv("UPSERT_CONSOLE__OPERATORS", '{"alice": "clear-text-key"}')
    with pytest.raises(ConfigurationError, match=r"console\.operators") as caught:
        load_settings()
    assert "clear-text-key" not in str(caught.value)
    monkeypatch.setenv("UPSERT_CONSOLE__OPERATORS", "{}")
    monkeypatch.setenv("UPSERT_CONSOLE__LISTEN", "8081")
    with pytest.raises(ConfigurationError, match=r"console\.listen"):
        load_settings()


def test_a_key_is_checked_against_its_operators_digest_only() -> None:
    import hashlib

    settings = ConsoleSettings(operators={
        "alice": "sha256:" + hashlib.sha256(b"k1").hexdigest(), "bob": DIGEST})
    assert check_key(settings, "alice", "k1")
    assert not check_key(settings, "bob", "k1")
    assert not check_key(settings, "nobody", "k1")
    assert not check_key(ConsoleSettings(), "alice", "k1")


def test_the_command_refuses_to_listen_beyond_loopback_without_operators(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("UPSERT_CONSOLE__LISTEN", "0.0.0.0:8081")
    monkeypatch.setattr("worker.cli.configure_logging", lambda *_: None)
    assert main(["console"]) == 2
    assert "refusing to start" in capsys.readouterr().err


def test_rates_come_from_the_items_and_batches_counters() -> None:
    text = ('upsert_items_total{database="demo",entity="Benefit",status="201"} 4.0\n'
            'upsert_items_total{database="demo",entity="Armor",status="201"} 1.0\n'
            'upsert_batches_total{database="demo",entity="Benefit",outcome="answered"} 2.0\n'
            'upsert_broker_connected 1.0\n')
    assert counters(text) == {("upsert_items_total", "demo", "201"): 5.0,
                              ("upsert_batches_total", "demo", "answered"): 2.0}
    assert shown_url("http://user:pw@10.0.0.1:9464/") == "http://10.0.0.1:9464/"


@pytest.mark.parametrize("value", [None, "", "0", "-5", "abc", "1e9", "9" * 5000, "\x00"])
def test_a_hostile_page_number_reads_as_the_first_page(value: str | None) -> None:
    assert page_number(value) == 1


def test_a_page_number_is_read_as_given() -> None:
    assert page_number("7") == 7
