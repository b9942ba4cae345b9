"""The load generator's HTTP side: batches PUT to the gateway, as a system that called the
original API would send them, one keep-alive connection per batch in flight."""

from __future__ import annotations

import httpx

from bench.data import PATH


class HttpProducer:
    """Same interface as :class:`bench.load.Producer`, over the HTTP gateway."""

    def __init__(self, base_url: str, database: str = "bench", timeout_s: float = 120.0,
                 *, path: str = PATH, connections: int = 64) -> None:
        self.path = path
        self.headers = {"vbasoftware-database": database, "content-type": "application/json"}
        self.http = httpx.AsyncClient(
            base_url=base_url, timeout=timeout_s,
            limits=httpx.Limits(max_connections=connections,
                                max_keepalive_connections=connections))
        self.statuses: dict[int, int] = {}
        self.last_reply: bytes = b""

    async def __aenter__(self) -> HttpProducer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def call(self, body: bytes) -> None:
        response = await self.http.put(self.path, content=body, headers=self.headers)
        self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
        self.last_reply = response.content

    def reset(self) -> None:
        self.statuses = {}
