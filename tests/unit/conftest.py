"""The unit tier needs no services at all: no broker, no database, no server binary.  A test
here that asks for one (a vhost, a database, a worker: tests/support/fixtures.py) fails
saying so; it belongs in tests/integration."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def services() -> None:
    pytest.fail("a unit test asked for the services (a vhost, a database, a worker ...): "
                "it belongs in tests/integration", pytrace=False)
