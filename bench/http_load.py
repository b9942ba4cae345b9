"""The load generator's HTTP side: batches PUT to the gateway, as a system that called the
original API would send them, one keep-alive connection per batch in flight."""

from __future__ import annotations

import aiohttp

from bench.data import PATH


class HttpProducer:
    """Same interface as :class:`bench.load.Producer`, over the HTTP gateway."""

    def __init__(self, base_url: str, database: str = "bench", timeout_s: float = 120.0,
                 *, path: str = PATH, connections: int = 64) -> None:
        self.url = base_url + path
        self.headers = {"vbasoftware-database": database, "content-type": "application/json"}
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.connections = connections
        self.statuses: dict[int, int] = {}
        self.last_reply: bytes = b""

    async def __aenter__(self) -> HttpProducer:
        # aiohttp, not httpx: measured, httpx spent about 5 ms of the load generator's CPU
        # per request, which on two shared cores would be charged to the gateway.
        self.http = aiohttp.ClientSession(
            timeout=self.timeout, connector=aiohttp.TCPConnector(limit=self.connections))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.close()

    async def call(self, body: bytes) -> None:
        async with self.http.put(self.url, data=body, headers=self.headers) as response:
            self.last_reply = await response.read()
        self.statuses[response.status] = self.statuses.get(response.status, 0) + 1

    def reset(self) -> None:
        self.statuses = {}
