"""Keep-alive connections that end: after an age or a number of requests, an answer says ``Connection: close``.

With ``mcdrop serve --workers N`` the kernel spreads *connections* over the workers; a client keeps its connection,
so after one worker restarts every client stays on the survivors for as long as it keeps the connection. Ending each
connection after ``--max-connection-age-seconds`` (or ``--max-connection-requests``) makes clients reconnect, and
the kernel spreads them again. uvicorn closes a connection after an answer with that header; the client opens a new
one for its next request (HTTP/1.1 clients do so on their own).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["ConnectionRecycling"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class ConnectionRecycling:
    """ASGI middleware: per connection (the client's address and port), its first request's time and its request
    count; the answer that passes either limit carries ``Connection: close``."""

    def __init__(self, app: App, max_age_seconds: float, max_requests: int) -> None:
        self.app = app
        self.max_age = max_age_seconds
        self.max_requests = max_requests
        self._seen: dict[tuple[str, int], tuple[float, int, float]] = {}
        """(client address, port) → (first request, requests, last request)."""
        self._pruned = time.monotonic()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] != "http" or client is None or (self.max_age <= 0 and self.max_requests <= 0):
            await self.app(scope, receive, send)
            return
        now = time.monotonic()
        key = (str(client[0]), int(client[1]))
        first, count, _ = self._seen.get(key, (now, 0, now))
        count += 1
        ending = (self.max_age > 0 and now - first >= self.max_age) or 0 < self.max_requests <= count
        if ending:
            self._seen.pop(key, None)
        else:
            self._seen[key] = (first, count, now)
        self._prune(now)
        if not ending:
            await self.app(scope, receive, send)
            return

        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message["headers"] = [*headers, (b"connection", b"close")]
            await send(message)

        await self.app(scope, receive, closing)

    def _prune(self, now: float) -> None:
        """Forget connections idle for a minute (most were closed by their clients; a port a new connection reuses
        then starts afresh), at most once a minute."""
        if now - self._pruned < 60.0:
            return
        self._pruned = now
        self._seen = {key: seen for key, seen in self._seen.items() if now - seen[2] < 60.0}
