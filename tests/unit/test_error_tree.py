"""One error tree (issue 19, item 5): every exception the worker defines is under
worker/core/errors.py's UpsertError, and none becomes its own ``__cause__``."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import worker
from schemas.registry import default_registry
from worker.core.errors import TransientFailure, UpsertError
from worker.settings import Settings
from worker.store import migrating
from worker.store.migrating import Migrator


def test_every_exception_of_the_worker_is_in_its_tree() -> None:
    outside = []
    for module_info in pkgutil.walk_packages(worker.__path__, "worker."):
        if module_info.name.endswith("__main__"):  # runs the command line
            continue
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if (inspect.isclass(value) and issubclass(value, BaseException)
                    and value.__module__ == module.__name__
                    and not issubclass(value, UpsertError)):
                outside.append(f"{module.__name__}.{name}")
    assert outside == []


async def test_a_migration_that_failed_transiently_keeps_its_own_cause(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """migrate() raises a TransientFailure already; the migrator passes it on as it is,
    not as its own cause (which also lost the driver's error it was raised from)."""

    async def unreachable(dsn: str, registry: object) -> list[str]:
        try:
            raise ConnectionRefusedError("refused")
        except OSError as e:
            raise TransientFailure("database unreachable: refused") from e

    monkeypatch.setattr(migrating, "migrate", unreachable)
    settings = Settings(databases={"demo": {"dsn": "postgresql://127.0.0.1/unused"}})
    with pytest.raises(TransientFailure) as raised:
        await Migrator(settings, default_registry()).ensure("demo")
    assert isinstance(raised.value.__cause__, ConnectionRefusedError)
