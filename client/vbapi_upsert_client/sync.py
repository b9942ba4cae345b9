"""The client library for scripts: :class:`~vbapi_upsert_client.UpsertClient` without async.

    with SyncUpsertClient("amqp://guest:guest@127.0.0.1/%2F", database="demo") as client:
        client.upsert("/benefits-batch", items).raise_for_status()

The async client runs on an event loop in a thread of its own, so that its connection
keeps answering the broker's heartbeats between calls.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from vbapi_upsert_client.client import UpsertClient
from vbapi_upsert_client.reply import ItemResult, Reply

T = TypeVar("T")


class SyncUpsertClient:
    def __init__(self, url: str, **options: Any) -> None:
        self._client = UpsertClient(url, **options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="upsert-client")

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def __enter__(self) -> SyncUpsertClient:
        self._thread.start()
        self._run(self._client.open())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._run(self._client.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    def upsert(self, path: str, items: Sequence[Any] | bytes, **options: Any) -> Reply:
        return self._run(self._client.upsert(path, items, **options))

    def upsert_many(self, path: str, items: Sequence[Any], **options: Any) -> list[ItemResult]:
        return self._run(self._client.upsert_many(path, items, **options))
