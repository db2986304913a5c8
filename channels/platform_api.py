"""What the platform API clients (WeCom, WeChat) share: the cached access token and our local error codes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

# Local errcodes, negative so they never collide with the platform's: what went wrong on our side of the wire.
MEDIA_TOO_LARGE = -2
HTTP_STATUS_ERROR = -3
UNREACHABLE = -4
MALFORMED_REPLY = -5


class CachedAccessToken:
    """An access token fetched on demand and cached until shortly before it expires.

    Concurrent callers that find no valid token share one fetch (single flight), so a burst of sends after
    an expiry costs one token request. ``fetch`` returns (token, expires_in seconds).
    """

    def __init__(
        self,
        fetch: Callable[[], Awaitable[tuple[str, float]]],
        *,
        clock: Callable[[], float] = time.monotonic,
        refresh_margin_s: float = 300.0,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._margin = refresh_margin_s
        self._token: str | None = None
        self._expires_at = 0.0
        self._flight: asyncio.Task[str] | None = None

    def __repr__(self) -> str:
        return f"<CachedAccessToken cached={self._token is not None}>"

    async def get(self) -> str:
        """The cached token, or a fresh one (joining a fetch already in flight)."""
        token = self._token
        if token is not None and self._clock() < self._expires_at:
            return token
        flight = self._flight
        if flight is None:
            flight = asyncio.get_running_loop().create_task(self._refresh())
            flight.add_done_callback(self._landed)
            self._flight = flight
        # shield: one waiter being cancelled must not cancel the fetch the others are waiting on.
        return await asyncio.shield(flight)

    def invalidate(self, token: str) -> None:
        """Forget ``token`` if it is still the cached one (a concurrent refresh may already have replaced it)."""
        if self._token == token:
            self._token = None

    async def _refresh(self) -> str:
        token, expires_in = await self._fetch()
        self._token = token
        self._expires_at = self._clock() + max(0.0, expires_in - self._margin)
        return token

    def _landed(self, flight: asyncio.Task[str]) -> None:
        if self._flight is flight:
            self._flight = None
        if not flight.cancelled():
            flight.exception()  # retrieved here, so a failure every waiter abandoned is not reported as lost
