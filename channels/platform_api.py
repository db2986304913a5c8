"""What the platform API clients (WeCom, WeChat) share: the cached access token and our local error codes.

With a Redis (`SharedAccessToken`), every process of the deployment (gateways, reminder workers) uses one token
per platform app: fetching a new WeChat or WeCom token retires the previous one a few minutes later, so
processes that each fetched their own would keep knocking each other's tokens out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from channels.redis_state import RedisState, RedisUnavailable

logger = logging.getLogger(__name__)

# Local errcodes, negative so they never collide with the platform's: what went wrong on our side of the wire.
MEDIA_TOO_LARGE = -2
HTTP_STATUS_ERROR = -3
UNREACHABLE = -4
MALFORMED_REPLY = -5


# Deletes KEYS[1] only while it still holds ARGV[1]: a token another process already replaced, or a lock another
# process now holds, is left alone.
_DELETE_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class SharedAccessToken:
    """One platform app's token in Redis (`bankbot:access_token:<platform>:<app id>`, expiring when it should be
    refreshed) and the lock that makes its refresh single-flight across processes (`...:refresh`).

    `lock_s` bounds how long a process that died mid-refresh blocks the others (longer than a token fetch's
    own timeout); `wait_s` is how long a process waits for another's refresh before fetching its own.
    """

    def __init__(
        self,
        redis: RedisState,
        platform: str,
        app_id: str,
        *,
        lock_s: float = 10.0,
        wait_s: float = 6.0,
        poll_s: float = 0.05,
    ) -> None:
        self.redis = redis
        self.key = redis.key("access_token", platform, app_id)
        self.lock_key = f"{self.key}:refresh"
        self.lock_s = lock_s
        self.wait_s = wait_s
        self.poll_s = poll_s

    def __repr__(self) -> str:
        return f"<SharedAccessToken {self.key}>"

    async def read(self) -> tuple[str, float] | None:
        """(token, seconds it stays valid for) when one is stored, else None."""

        async def run(client: Redis) -> tuple[bytes | None, int]:
            async with client.pipeline(transaction=True) as pipe:
                pipe.get(self.key)
                pipe.pttl(self.key)
                token, ttl_ms = await pipe.execute()
            return token, int(ttl_ms)

        token, ttl_ms = await self.redis.call("access_token", run)
        if token is None or ttl_ms <= 0:
            return None
        return token.decode(), ttl_ms / 1000

    async def store(self, token: str, lifetime_s: float) -> None:
        if lifetime_s < 1:
            return  # a token that must be refreshed at once is not worth sharing
        await self.redis.call("access_token", lambda client: client.set(self.key, token, px=round(lifetime_s * 1000)))

    async def try_lock(self) -> str | None:
        """This process's lock id when it now holds the refresh lock, None when another process holds it."""
        owner = uuid.uuid4().hex
        taken = await self.redis.call(
            "access_token", lambda client: client.set(self.lock_key, owner, nx=True, px=round(self.lock_s * 1000))
        )
        return owner if taken else None

    async def unlock(self, owner: str) -> None:
        await self._delete_if_equal(self.lock_key, owner)

    async def discard(self, token: str) -> bool:
        """Delete the stored token if it is still `token`; whether it was."""
        return await self._delete_if_equal(self.key, token)

    async def _delete_if_equal(self, key: str, value: str) -> bool:
        async def run(client: Redis) -> bool:
            return bool(await client.eval(_DELETE_IF_EQUAL, 1, key, value))

        return await self.redis.call("access_token", run)


class CachedAccessToken:
    """An access token fetched on demand and cached until shortly before it expires.

    Concurrent callers that find no valid token share one fetch (single flight), so a burst of sends after
    an expiry costs one token request. ``fetch`` returns (token, expires_in seconds).

    With ``shared``, the token also lives in Redis for every process of the deployment: a process without a
    valid token takes the shared one, or takes the refresh lock and fetches (storing the result), or waits
    briefly for the process holding the lock, then fetches its own. When Redis fails, it behaves exactly as
    without it.
    """

    def __init__(
        self,
        fetch: Callable[[], Awaitable[tuple[str, float]]],
        *,
        clock: Callable[[], float] = time.monotonic,
        refresh_margin_s: float = 300.0,
        shared: SharedAccessToken | None = None,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._margin = refresh_margin_s
        self._shared = shared
        self._token: str | None = None
        self._expires_at = 0.0
        self._flight: asyncio.Task[str] | None = None

    def __repr__(self) -> str:
        return f"<CachedAccessToken cached={self._token is not None} shared={self._shared is not None}>"

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

    async def invalidate(self, token: str) -> None:
        """Forget ``token`` if it is still the cached one (a concurrent refresh may already have replaced it);
        with ``shared``, also the shared one, only if it is still ``token``."""
        if self._token == token:
            self._token = None
        if self._shared is not None:
            with contextlib.suppress(RedisUnavailable):
                await self._shared.discard(token)

    async def _refresh(self) -> str:
        if self._shared is not None:
            try:
                return await self._refresh_shared(self._shared)
            except RedisUnavailable:
                pass  # counted and logged by RedisState: fetch our own, as a lone process does
        token, expires_in = await self._fetch()
        return self._keep(token, expires_in - self._margin)

    async def _refresh_shared(self, shared: SharedAccessToken) -> str:
        # Real time, not `clock`: tests drive expiry with a fake clock, and this waits for another process.
        deadline = time.monotonic() + shared.wait_s
        while True:
            found = await shared.read()
            if found is not None:
                return self._keep(*found)
            owner = await shared.try_lock()
            if owner is not None:
                try:
                    # Stored by another process between our read and our lock?
                    found = await shared.read()
                    if found is not None:
                        return self._keep(*found)
                    return await self._fetch_and_share(shared)
                finally:
                    with contextlib.suppress(RedisUnavailable):
                        await shared.unlock(owner)
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(shared.poll_s)
        # The lock holder neither stored a token nor let go in time (slow or dead): fetch our own.
        logger.warning("no shared access token appeared within %.1f s (%s); fetching one here", shared.wait_s, shared)
        return await self._fetch_and_share(shared)

    async def _fetch_and_share(self, shared: SharedAccessToken) -> str:
        token, expires_in = await self._fetch()
        lifetime = max(0.0, expires_in - self._margin)
        with contextlib.suppress(RedisUnavailable):
            await shared.store(token, lifetime)
        return self._keep(token, lifetime)

    def _keep(self, token: str, lifetime_s: float) -> str:
        self._token = token
        self._expires_at = self._clock() + max(0.0, lifetime_s)
        return token

    def _landed(self, flight: asyncio.Task[str]) -> None:
        if self._flight is flight:
            self._flight = None
        if not flight.cancelled():
            flight.exception()  # retrieved here, so a failure every waiter abandoned is not reported as lost
