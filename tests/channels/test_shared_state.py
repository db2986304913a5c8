"""What gateway processes share through a real Redis: one rate limit per customer and one platform access token,
failing open to each process's own memory while Redis is stopped or stalled, and shared again once it is back."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bankbot.engines.redis_server import RedisServer, find_binary
from channels.platform_api import CachedAccessToken, SharedAccessToken
from channels.rate_limit import RateLimiter
from channels.redis_state import RedisState, RedisUnavailable
from channels.resources import REDIS
from channels.wecom.inbound import WECOM_RUNTIME
from tests.channels.support import FakeRasa, login
from tests.channels.wecom_support import WeComPlatform, callbacks, texts_to, wait_until, wecom_env

pytestmark = pytest.mark.redis

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    if find_binary() is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    with RedisServer() as server:
        yield server


class Fallbacks:
    """Counts what RedisState reports as served without Redis, by component."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def __call__(self, component: str) -> None:
        self.counts[component] = self.counts.get(component, 0) + 1


@pytest.fixture
async def open_state(redis_server: RedisServer) -> AsyncIterator[Callable[..., RedisState]]:
    """Opens RedisStates on the server (each its own client: a separate "gateway process") and closes them."""
    states: list[RedisState] = []

    def open_one(**options: Any) -> RedisState:
        state = RedisState(redis_server.url, **options)
        state.open()
        states.append(state)
        return state

    yield open_one
    for state in states:
        await state.close()


def limiter_on(state: RedisState, limit: int = 3, window_s: float = 60.0) -> RateLimiter:
    limiter = RateLimiter("webchat", limit, window_s=window_s)
    limiter.share_through(state)
    return limiter


# --- rate limits --------------------------------------------------------------------------------------------


async def test_two_gateways_enforce_one_limit_per_customer(open_state: Callable[..., RedisState]) -> None:
    first, second = limiter_on(open_state()), limiter_on(open_state())
    assert [await first.allow("C001"), await second.allow("C001"), await first.allow("C001")] == [True, True, True]
    assert await second.allow("C001") is False
    assert await first.allow("C001") is False
    # Another customer has a window of their own.
    assert await second.allow("C002") is True


async def test_the_limit_frees_up_after_the_window(open_state: Callable[..., RedisState]) -> None:
    first, second = limiter_on(open_state(), limit=2, window_s=0.4), limiter_on(open_state(), limit=2, window_s=0.4)
    assert await first.allow("C001") and await second.allow("C001")
    assert await first.allow("C001") is False
    await asyncio.sleep(0.5)
    assert await second.allow("C001") is True


async def test_the_same_event_id_counts_once_however_often_it_is_retried(
    open_state: Callable[..., RedisState],
) -> None:
    first, second = limiter_on(open_state(), limit=2), limiter_on(open_state(), limit=2)
    for _ in range(5):
        assert await first.allow("u1", event_id="msg:1") is True
        assert await second.allow("u1", event_id="msg:1") is True
    assert await second.allow("u1", event_id="msg:2") is True
    assert await first.allow("u1", event_id="msg:3") is False


async def test_windows_live_under_the_bankbot_prefix_and_expire(
    open_state: Callable[..., RedisState],
) -> None:
    state = open_state()
    await limiter_on(state, window_s=5).allow("C001")
    keys = await state.client.keys("*")
    assert keys == [b"bankbot:rate:webchat:C001"]
    assert 0 < await state.client.pttl(keys[0]) <= 5000


async def test_redis_stopped_fails_open_to_each_process_and_is_shared_again_when_back(
    redis_server: RedisServer, open_state: Callable[..., RedisState], caplog: pytest.LogCaptureFixture
) -> None:
    fallbacks = Fallbacks()
    first_state = open_state(on_fallback=fallbacks, retry_after_s=0.1)
    first, second = limiter_on(first_state, limit=2), limiter_on(open_state(retry_after_s=0.1), limit=2)
    assert await first.allow("C001") is True

    redis_server.stop_server()
    with caplog.at_level(logging.WARNING, logger="channels.redis_state"):
        started = time.monotonic()
        # Each process counts on its own now: nobody is refused because Redis is down, and nothing raises.
        assert [await first.allow("C001") for _ in range(2)] == [True, True]
        assert [await second.allow("C001") for _ in range(2)] == [True, True]
        assert time.monotonic() - started < 2.0
        # Past its own window's limit a process still refuses, as a lone gateway does.
        assert await first.allow("C001") is False
    assert fallbacks.counts["rate_limit"] == 3
    outage_logs = [record for record in caplog.records if "Redis unavailable" in record.getMessage()]
    assert len(outage_logs) == 2, "an outage is logged once per process (two processes here)"
    assert redis_server.url not in caplog.text

    redis_server.start_server()  # same port, empty: the windows start again
    await asyncio.sleep(0.15)  # past retry_after_s
    assert await first.allow("C002") is True
    assert await second.allow("C002") is True
    assert await first.allow("C002") is False
    assert await second.allow("C002") is False
    assert not first_state.down
    assert fallbacks.counts["rate_limit"] == 3
    assert "Redis answers again" in caplog.text


async def test_a_stalled_redis_delays_a_call_by_at_most_the_deadline(
    redis_server: RedisServer, open_state: Callable[..., RedisState]
) -> None:
    state = open_state(op_timeout_s=0.3)
    limiter = limiter_on(state)
    assert await limiter.allow("C001") is True  # a pooled connection exists
    redis_server.suspend()
    try:
        started = time.monotonic()
        assert await limiter.allow("C001") is True
        first_call = time.monotonic() - started
        started = time.monotonic()
        assert await limiter.allow("C001") is True  # cooling down: no second wait
        second_call = time.monotonic() - started
    finally:
        redis_server.resume()
    assert first_call < 1.0  # the 0.3 s deadline, with room for a loaded machine
    assert second_call < 0.2
    assert state.down


# --- access tokens ------------------------------------------------------------------------------------------


class FakeFetch:
    """A platform's token endpoint: each call issues a new token, after `delay_s`."""

    def __init__(self, delay_s: float = 0.2, expires_in: float = 7200.0) -> None:
        self.delay_s = delay_s
        self.expires_in = expires_in
        self.calls = 0

    async def __call__(self) -> tuple[str, float]:
        self.calls += 1
        number = self.calls
        await asyncio.sleep(self.delay_s)
        return f"token-{number}", self.expires_in


def token_cache(state: RedisState, fetch: FakeFetch, **options: Any) -> CachedAccessToken:
    return CachedAccessToken(fetch, shared=SharedAccessToken(state, "wecom", "ww-corp", poll_s=0.02, **options))


async def test_two_processes_share_one_fetch_and_one_token(open_state: Callable[..., RedisState]) -> None:
    fetch = FakeFetch()
    first, second = token_cache(open_state(), fetch), token_cache(open_state(), fetch)
    tokens = await asyncio.gather(first.get(), second.get(), first.get(), second.get())
    assert tokens == ["token-1"] * 4
    assert fetch.calls == 1
    # A third process started later takes the stored token.
    assert await token_cache(open_state(), fetch).get() == "token-1"
    assert fetch.calls == 1


async def test_the_shared_token_expires_margin_seconds_before_the_platform_says(
    open_state: Callable[..., RedisState],
) -> None:
    state = open_state()
    fetch = FakeFetch(delay_s=0, expires_in=7200)
    await CachedAccessToken(fetch, refresh_margin_s=300, shared=SharedAccessToken(state, "wechat", "wx-app")).get()
    ttl_ms = await state.client.pttl("bankbot:access_token:wechat:wx-app")
    assert 6_890_000 < ttl_ms <= 6_900_000


async def test_invalidate_deletes_the_shared_token_only_while_it_is_still_that_token(
    open_state: Callable[..., RedisState],
) -> None:
    fetch = FakeFetch(delay_s=0)
    state = open_state()
    first, second = token_cache(state, fetch), token_cache(open_state(), fetch)
    assert await first.get() == "token-1"
    assert await second.get() == "token-1"
    key = "bankbot:access_token:wecom:ww-corp"

    await second.invalidate("some-other-token")
    assert await state.client.get(key) == b"token-1"

    await first.invalidate("token-1")  # the platform refused it (40014)
    assert await state.client.get(key) is None
    assert await first.get() == "token-2"

    await second.invalidate("token-1")  # a late caller that also met 40014 on the old token
    assert await state.client.get(key) == b"token-2"
    assert await second.get() == "token-2"
    assert fetch.calls == 2


async def test_a_process_waiting_on_a_refresh_that_fails_takes_over(open_state: Callable[..., RedisState]) -> None:
    class FailingOnce(FakeFetch):
        async def __call__(self) -> tuple[str, float]:
            if self.calls == 0:
                self.calls += 1
                await asyncio.sleep(self.delay_s)
                raise RuntimeError("gettoken answered -1 (system busy)")
            return await super().__call__()

    fetch = FailingOnce(delay_s=0.1)
    first, second = token_cache(open_state(), fetch), token_cache(open_state(), fetch)
    results = await asyncio.gather(first.get(), second.get(), return_exceptions=True)
    assert [type(result) for result in results].count(RuntimeError) == 1
    assert "token-2" in results
    assert fetch.calls == 2


async def test_a_lock_held_by_a_dead_process_delays_a_refresh_by_at_most_the_wait(
    open_state: Callable[..., RedisState],
) -> None:
    state = open_state()
    fetch = FakeFetch(delay_s=0)
    shared = SharedAccessToken(state, "wecom", "ww-corp", wait_s=0.3, poll_s=0.02)
    assert await shared.try_lock() is not None  # taken by a process that then died
    started = time.monotonic()
    assert await CachedAccessToken(fetch, shared=shared).get() == "token-1"
    assert 0.3 <= time.monotonic() - started < 2.0
    assert fetch.calls == 1


async def test_with_redis_stopped_the_token_cache_behaves_as_in_process_and_shares_again_after(
    redis_server: RedisServer, open_state: Callable[..., RedisState]
) -> None:
    fetch = FakeFetch(delay_s=0.05)
    fallbacks = Fallbacks()
    first = token_cache(open_state(on_fallback=fallbacks, retry_after_s=0.1), fetch)
    second = token_cache(open_state(retry_after_s=0.1), fetch)
    redis_server.stop_server()

    # Each process fetches its own, single flight within the process, and invalidation does not raise.
    assert await asyncio.gather(first.get(), first.get()) == ["token-1", "token-1"]
    assert await first.get() == "token-1"
    await first.invalidate("token-1")
    assert await first.get() == "token-2"
    assert await second.get() == "token-3"
    assert fetch.calls == 3
    assert fallbacks.counts["access_token"] >= 2

    redis_server.start_server()
    await asyncio.sleep(0.15)
    await first.invalidate("token-2")
    await second.invalidate("token-3")
    tokens = await asyncio.gather(first.get(), second.get())
    assert tokens == ["token-4", "token-4"]
    assert fetch.calls == 4


async def test_redis_unavailable_is_raised_without_the_url(redis_server: RedisServer) -> None:
    server_url = redis_server.url
    redis_server.stop_server()
    state = RedisState(server_url)
    state.open()
    try:
        with pytest.raises(RedisUnavailable) as raised:
            await state.call("test", lambda client: client.ping())
        assert server_url not in str(raised.value)
        assert "127.0.0.1" not in str(raised.value)
    finally:
        await state.close()


# --- gateways -----------------------------------------------------------------------------------------------


async def _say(client: Client, headers: dict[str, str], text: str = "余额") -> int:
    response = await client.post("/webchat/messages", json={"text": text}, headers=headers)
    return response.status


async def test_two_gateways_share_the_web_chat_limit_and_fail_open_when_redis_stops(
    start_gateway: Callable[..., Any], fake_rasa: FakeRasa, redis_server: RedisServer
) -> None:
    first = await start_gateway(fake_rasa.url, rate_limit=3, BANKBOT_REDIS_URL=redis_server.url)
    second = await start_gateway(fake_rasa.url, rate_limit=3, BANKBOT_REDIS_URL=redis_server.url)
    headers = await login(first)
    assert [await _say(first, headers), await _say(second, headers), await _say(first, headers)] == [200, 200, 200]
    assert await _say(second, headers) == 429

    ready = await first.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["checks"] == {"database": "ok", "rasa": "ok", "redis": "ok"}

    redis_server.stop_server()
    other = await login(second, "C002")
    assert await _say(second, other) == 200  # Redis down: answered, not refused
    not_ready = await second.get("/readyz")
    assert not_ready.status == 200  # still serving: Redis is reported, not required
    body = await not_ready.json()
    assert body["status"] == "degraded"
    assert body["checks"]["redis"].startswith("error: ")
    assert str(redis_server.port) not in await not_ready.text()
    assert (await second.get("/healthz")).status == 200

    metrics = await (await second.get("/metrics")).text()
    assert 'bankbot_gateway_redis_fallbacks_total{component="rate_limit"} 1.0' in metrics
    assert REDIS in second.app and REDIS in first.app


async def test_without_a_redis_url_the_gateway_has_no_redis_and_readyz_does_not_check_one(
    gateway: Client,
) -> None:
    assert REDIS not in gateway.app
    body = await (await gateway.get("/readyz")).json()
    assert set(body["checks"]) == {"database", "rasa"}


async def test_two_wecom_gateways_share_the_users_limit_and_one_access_token(
    start_gateway: Callable[..., Any], fake_rasa: FakeRasa, wecom_platform: WeComPlatform, redis_server: RedisServer
) -> None:
    env = wecom_env(wecom_platform.url, BANKBOT_WECOM_RATE_LIMIT_PER_MINUTE="2", BANKBOT_REDIS_URL=redis_server.url)
    gateways = [await start_gateway(fake_rasa.url, **env), await start_gateway(fake_rasa.url, **env)]
    make = callbacks()
    first = make.text("wangwei", "消息0")
    for gateway in (*gateways, *gateways):  # WeCom's retries of one message, through either gateway
        response = await gateway.post("/wecom/callback", params=first.query, data=first.body)
        assert response.status == 200
    for index in range(1, 5):
        callback = make.text("wangwei", f"消息{index}")
        response = await gateways[index % 2].post("/wecom/callback", params=callback.query, data=callback.body)
        assert response.status == 200
    await wait_until(lambda: len(texts_to(wecom_platform.simulator, "wangwei")) == 3)
    await asyncio.sleep(0.5)
    assert sorted(fake_rasa.texts_sent()) == ["消息0", "消息1"]
    # Two answers and one "too fast" notice, however many gateways the refused messages reached.
    replies = texts_to(wecom_platform.simulator, "wangwei")
    assert len(replies) == 3
    assert sum("太快" in reply for reply in replies) == 1
    # Every gateway uses the one token the first fetch got.
    tokens = {await gateway.app[WECOM_RUNTIME].api.access_token() for gateway in gateways}
    assert len(tokens) == 1
    assert wecom_platform.simulator.gettoken_calls == 1
