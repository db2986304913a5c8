"""The WeCom and WeChat API simulators served from a background thread of the pytest process, for the live stack.

The gateway under test is a separate process, so the simulators it calls must keep answering while a test blocks
on an HTTP request: they run on their own asyncio loop in a daemon thread, on loopback ports bound before the
stack starts. Tests read simulator state (`sent` lists) directly; anything that changes it goes through
`SimulatorThread.call`, which runs on the simulators' loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from aiohttp import web

from channels.platform_simulators.wechat import WeChatSimulator
from channels.platform_simulators.wecom import WeComSimulator
from tests.channels.wecom_support import APP_ID, APP_SECRET, CORP_ID, SECRET, miniprogram_env, wecom_env

T = TypeVar("T")


class SimulatorThread:
    """One asyncio loop in a daemon thread, serving aiohttp applications on 127.0.0.1."""

    def __init__(self, name: str = "platform-simulators") -> None:
        self.loop = asyncio.new_event_loop()
        self._runners: list[web.AppRunner] = []
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, function: Callable[[], T], timeout: float = 10.0) -> T:
        """Run `function` on the simulators' loop (call_soon_threadsafe) and return its result."""
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(function())
            except BaseException as error:  # handed to the waiting test thread
                done.set_exception(error)

        self.loop.call_soon_threadsafe(run)
        return done.result(timeout)

    def serve(self, app: web.Application, timeout: float = 30.0) -> str:
        """Serve `app` on a free loopback port; returns its base URL."""

        async def start() -> int:
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self._runners.append(runner)
            return int(runner.addresses[0][1])

        port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(timeout)
        return f"http://127.0.0.1:{port}"

    def stop(self, timeout: float = 30.0) -> None:
        async def cleanup() -> None:
            for runner in reversed(self._runners):
                await runner.cleanup()
            self._runners.clear()

        try:
            asyncio.run_coroutine_threadsafe(cleanup(), self.loop).result(timeout)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self.loop.close()


@dataclass
class PlatformSimulators:
    """The two platforms as the live gateway sees them, and the thread that serves them."""

    thread: SimulatorThread
    wecom: WeComSimulator
    wecom_url: str
    wechat: WeChatSimulator
    wechat_url: str

    def gateway_env(self) -> dict[str, str]:
        """The gateway's WeCom and mini-program settings pointing at these simulators (no per-user throttle)."""
        return {
            **wecom_env(self.wecom_url, BANKBOT_WECOM_RATE_LIMIT_PER_MINUTE="0"),
            **miniprogram_env(self.wechat_url, BANKBOT_MINIPROGRAM_RATE_LIMIT_PER_MINUTE="0"),
        }

    def set_wecom_down(self, down: bool) -> None:
        def apply() -> None:
            self.wecom.down = down

        self.thread.call(apply)

    def expire_wecom_tokens(self) -> None:
        self.thread.call(self.wecom.expire_all_tokens)

    def set_wechat_down(self, down: bool) -> None:
        def apply() -> None:
            self.wechat.down = down

        self.thread.call(apply)

    def expire_wechat_tokens(self) -> None:
        self.thread.call(self.wechat.expire_all_tokens)

    def wecom_calls(self, endpoint: str) -> int:
        return self.thread.call(lambda: self.wecom.calls[endpoint])

    def issue_login_code(self, openid: str, unionid: str | None = None) -> str:
        return self.thread.call(lambda: self.wechat.issue_login_code(openid, unionid))


@contextmanager
def serve_platform_simulators() -> Iterator[PlatformSimulators]:
    """Start both simulators in one background thread; stop them (and the thread) on exit."""
    thread = SimulatorThread()
    try:
        wecom = WeComSimulator(CORP_ID, SECRET)
        wechat = WeChatSimulator(APP_ID, APP_SECRET)
        platforms = PlatformSimulators(
            thread=thread,
            wecom=wecom,
            wecom_url=thread.serve(wecom.app()),
            wechat=wechat,
            wechat_url=thread.serve(wechat.app()),
        )
        yield platforms
    finally:
        thread.stop()
