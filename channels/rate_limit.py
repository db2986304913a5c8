"""A per-key sliding-window rate limit kept in process memory (one gateway process per deployment)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


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
