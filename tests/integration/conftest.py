"""The integration tier: every test runs against the session's PostgreSQL and RabbitMQ
(the TEST_* settings', this machine's, or containers: tests/support/sources.py), each in
its own vhost and database (the fixtures of tests/support/fixtures.py)."""

from __future__ import annotations

import pytest

from tests.support.services import Services


@pytest.fixture(scope="session", autouse=True)
def session_services(services: Services, pooled_databases: None) -> Services:
    """The services chosen (containers started if need be) before the first test, and the
    reused databases dropped after the last."""
    return services
