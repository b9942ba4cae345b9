"""The server binaries the fault tier starts clusters from (rabbitmq-server, initdb, pg_ctl):
where one is missing, a test skips, saying what is missing; in CI (``CI`` set, as CI
services set it: ``CI=true``) it fails instead, so that a CI machine without them cannot
pass the fault tier by skipping it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NoReturn


def in_ci(env: Mapping[str, str] = os.environ) -> bool:
    return env.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(what: str, env: Mapping[str, str] = os.environ) -> NoReturn:
    """Skip the test for want of ``what``, or in CI fail it."""
    import pytest

    if in_ci(env):
        pytest.fail(f"{what} not installed, and CI is set: in CI the fault tier runs in "
                    f"full, it does not skip", pytrace=False)
    pytest.skip(f"{what} not installed")
