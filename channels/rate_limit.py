"""Per-key sliding-window rate limits: in process memory, or in Redis so that every gateway counts against one.

`SlidingWindowLimiter` is the in-process window. `RateLimiter` is what the adapters hold: the same window in
Redis when the gateway has one (a sorted set per key, trimmed and counted in one Lua script on Redis's clock),
else in process. When Redis fails the limiter fails open to its in-process window for that call: a customer is
never refused because Redis is down, at the cost of each process counting on its own until it is back.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from channels.redis_state import RedisState, RedisUnavailable

# KEYS[1]: the key's window; ARGV: window in microseconds, limit, the event's member. Redis's own clock, so
# gateways with skewed clocks agree. An event already in the window (a retried message with the same id) is
# allowed again without counting twice.
_SLIDING_WINDOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  return 1
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
return 1
"""


class SlidingWindowLimiter:
    """Allows at most `limit` events per `window_s` seconds for each key; `limit` 0 disables it."""

    def __init__(self, limit: int, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit
        self._window = window_s
        self._clock = clock
        self._events: dict[str, deque[float]] = {}

    def allow(self, key: str) -> bool:
        if self._limit <= 0:
            return True
        now = self._clock()
        events = self._events.setdefault(key, deque())
        while events and events[0] <= now - self._window:
            events.popleft()
        if len(events) >= self._limit:
            return False
        events.append(now)
        if len(self._events) > 100_000:
            # Bound memory under a flood of distinct keys: forget keys with no recent events.
            self._events = {k: v for k, v in self._events.items() if v and v[-1] > now - self._window}
        return True


class RateLimiter:
    """At most `limit` events per `window_s` seconds for each key, across every gateway sharing a Redis.

    `scope` names the limit in Redis keys (`bankbot:rate:<scope>:<key>`); `limit` 0 disables it. Without
    `share_through(redis)` it is the in-process window alone, exactly as before there was a Redis.
    """

    def __init__(
        self, scope: str, limit: int, window_s: float = 60.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.scope = scope
        self.limit = limit
        self.window_s = window_s
        self._local = SlidingWindowLimiter(limit, window_s, clock=clock)
        self._redis: RedisState | None = None
        self._script: AsyncScript | None = None

    def __repr__(self) -> str:
        return f"<RateLimiter {self.scope} {self.limit}/{self.window_s:g}s shared={self.shared}>"

    @property
    def shared(self) -> bool:
        return self._redis is not None and self.limit > 0

    def share_through(self, redis: RedisState | None) -> None:
        """Keep the windows in `redis` from now on (None: in process)."""
        self._redis = redis

    async def allow(self, key: str, *, event_id: str | None = None) -> bool:
        """Whether one more event for `key` is within the limit (and count it if so).

        `event_id` identifies the event across retries: the same id within the window counts once (shared
        windows only; the in-process window counts every call).
        """
        if self.limit <= 0:
            return True
        decision = await self.shared_decision(key, event_id=event_id)
        return decision if decision is not None else self._local.allow(key)

    async def shared_decision(self, key: str, *, event_id: str | None = None) -> bool | None:
        """The shared window's answer, or None when there is none (not shared, or Redis failed: counted)."""
        redis = self._redis
        if redis is None or self.limit <= 0:
            return None
        member = event_id or uuid.uuid4().hex
        window_us = max(1, round(self.window_s * 1_000_000))

        async def run(client: Redis) -> bool:
            script = self._script
            if script is None or script.registered_client is not client:
                # EVALSHA, loading the script again when Redis has forgotten it (a restart).
                script = self._script = client.register_script(_SLIDING_WINDOW)
            return bool(await script(keys=[redis.key("rate", self.scope, key)], args=[window_us, self.limit, member]))

        try:
            return await redis.call("rate_limit", run)
        except RedisUnavailable:
            return None

    async def first_in_period(self, key: str, period_s: float) -> bool | None:
        """Whether this is the first call for `key` in `period_s` across every process sharing the limit (say
        "too fast" once, not once per gateway); None when there is no shared answer."""
        redis = self._redis
        if redis is None:
            return None
        marker = redis.key("rate_notice", self.scope, key)
        try:
            taken = await redis.call(
                "rate_limit", lambda client: client.set(marker, "1", nx=True, px=max(1, round(period_s * 1000)))
            )
        except RedisUnavailable:
            return None
        return bool(taken)

    def allow_in_process(self, key: str) -> bool:
        """The in-process window alone (the fallback, and callers that cannot await)."""
        return self._local.allow(key)
