"""The three tiers share this: tests/unit (no services at all), tests/integration (the
session's PostgreSQL and RabbitMQ) and tests/faults (clusters and kills).  The fixtures of
the tiers with services are a plugin, tests/support/fixtures.py; each tier's conftest says
what its tests may use.

How many examples a property test (Hypothesis) tries, where it does not say: 100 unless
``--hypothesis-profile=thorough`` (300) is given, as ``./dev test`` does for the full run
(and so CI), so that the unit tier on its own stays under 30 s.  The edge cases the
strategies are built around are also checked one by one, whatever the profile
(tests/unit/test_fast_reader.py)."""

from hypothesis import settings

pytest_plugins = ["tests.support.fixtures"]

settings.register_profile("quick", max_examples=100)
settings.register_profile("thorough", max_examples=300)
settings.load_profile("quick")
