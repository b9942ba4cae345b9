"""The one TOML writer of the tests and the benchmark: what it writes reads back as given."""

from __future__ import annotations

import tomllib

from tests.support.configs import merged, to_toml


def test_toml_reads_back_as_written_whatever_the_strings_hold() -> None:
    values = {
        "amqp": {"url": 'amqp://u:p"w\\d@127.0.0.1:5672/%2F', "prefetch_count": 8,
                 "publish_timeout_s": 0.5, "confirm": True},
        "retry": {"delays_s": [0.2, 1.0, 1e-05], "names": ["a b", "c\"d"]},
        "databases": {"demo": {"dsn": "line\nbreak\ttab\x00nul\x7fdel\u00e9\U0001f600"},
                      "with space.and dot": {"dsn": "x"}},
    }
    assert tomllib.loads(to_toml(values)) == values


def test_toml_leaves_out_none_and_merged_sections_keep_their_defaults() -> None:
    values = merged({"amqp": {"url": "u", "prefetch_count": 8}, "metrics": {"port": 0}},
                    {"amqp": {"prefetch_count": 16, "heartbeat_s": None}})
    assert values == {"amqp": {"url": "u", "prefetch_count": 16, "heartbeat_s": None},
                      "metrics": {"port": 0}}
    assert tomllib.loads(to_toml(values)) == {"amqp": {"url": "u", "prefetch_count": 16},
                                              "metrics": {"port": 0}}
