"""The gateway's connection to Redis (BANKBOT_REDIS_URL), with short deadlines and the bookkeeping of outages.

What several gateway processes must agree on lives in Redis: the per-customer rate limits (channels.rate_limit)
and the platforms' access tokens (channels.platform_api). Redis helps; a turn never depends on it. Every
operation has a deadline of `op_timeout_s` (0.5 s: a stopped or stalled Redis must not hold a turn for long),
and when Redis fails the caller gets `RedisUnavailable` and does what a lone gateway does with its own memory.
After a failure Redis is left alone for `retry_after_s`, so an outage costs one deadline per second rather
than one per request. Each outage is logged once when it starts and once when it ends; every call served
without Redis is counted (`on_fallback`, the gateway's `bankbot_gateway_redis_fallbacks` counter).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# Every key the gateways write starts with this, so a Redis shared with Rasa's lock store stays tidy.
KEY_PREFIX = "bankbot:"
OP_TIMEOUT_S = 0.5
RETRY_AFTER_S = 1.0


class RedisUnavailable(Exception):
    """Redis is not configured here, is in a cool-down after a failure, or failed this call (already counted)."""


class RedisState:
    """One client (a connection pool) per process; `open()` on startup, `close()` on cleanup."""

    def __init__(
        self,
        url: str,
        *,
        op_timeout_s: float = OP_TIMEOUT_S,
        retry_after_s: float = RETRY_AFTER_S,
        on_fallback: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self.op_timeout_s = op_timeout_s
        self.retry_after_s = retry_after_s
        self._on_fallback = on_fallback
        self._clock = clock
        self._client: aioredis.Redis | None = None
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._fallbacks_in_outage = 0

    def __repr__(self) -> str:
        # Never the URL: it may carry the password.
        return f"<RedisState open={self._client is not None} down={self._down_since is not None}>"

    # -- lifecycle -------------------------------------------------------------------------------------------

    def open(self) -> None:
        """Create the client; no connection is made until the first command (a Redis still down is no error)."""
        if self._client is None:
            self._client = aioredis.Redis.from_url(
                self._url,
                socket_timeout=self.op_timeout_s,
                socket_connect_timeout=self.op_timeout_s,
                # One immediate retry: a pooled connection that died with a Redis restart is replaced at once. No
                # backoff: the deadline below bounds the whole call anyway.
                retry=Retry(NoBackoff(), 1),
                health_check_interval=0,
                client_name="bankbot-gateway",
            )

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- keys and calls --------------------------------------------------------------------------------------

    @staticmethod
    def key(*parts: str) -> str:
        """`bankbot:part:part...`."""
        return KEY_PREFIX + ":".join(parts)

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            raise RedisUnavailable("the Redis client is not open")
        return self._client

    @property
    def down(self) -> bool:
        """An outage has been seen and no call has succeeded since."""
        return self._down_since is not None

    async def call(self, component: str, operation: Callable[[aioredis.Redis], Awaitable[_T]]) -> _T:
        """Run `operation` on the client within the deadline.

        RedisUnavailable when the client is not open, Redis is cooling down after a failure, or it fails now
        (an unreachable or stalled server, a timeout, an error reply); the fallback is counted under `component`
        and an outage's start is logged.
        """
        client = self._client
        if client is None or (self._down_since is not None and self._clock() < self._retry_at):
            self._count_fallback(component)
            raise RedisUnavailable("Redis is not available")
        try:
            async with asyncio.timeout(self.op_timeout_s):
                result = await operation(client)
        except (RedisError, OSError, TimeoutError) as error:
            self._failed(component, error)
            # Only the type: a driver message can quote the address (and the URL carries the password).
            raise RedisUnavailable(type(error).__name__) from None
        self._succeeded()
        return result

    async def ping(self) -> None:
        """PING within the deadline, for readiness; raises what went wrong (not counted as a fallback)."""
        async with asyncio.timeout(self.op_timeout_s):
            await self.client.ping()
        self._succeeded()

    # -- outage bookkeeping ----------------------------------------------------------------------------------

    def _count_fallback(self, component: str) -> None:
        self._fallbacks_in_outage += 1
        if self._on_fallback is not None:
            self._on_fallback(component)

    def _failed(self, component: str, error: BaseException) -> None:
        now = self._clock()
        self._retry_at = now + self.retry_after_s
        if self._down_since is None:
            self._down_since = now
            self._fallbacks_in_outage = 0
            logger.warning(
                "Redis unavailable (%s, seen by %s): rate limits and access tokens fall back to this process's own"
                " memory until it answers again",
                type(error).__name__,
                component,
            )
        self._count_fallback(component)

    def _succeeded(self) -> None:
        if self._down_since is None:
            return
        logger.warning(
            "Redis answers again after %.1f s; %d calls were served from this process's memory meanwhile",
            self._clock() - self._down_since,
            self._fallbacks_in_outage,
        )
        self._down_since = None
        self._fallbacks_in_outage = 0
