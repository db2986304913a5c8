"""Fuzzing the WeCom callback and mini-program message endpoints over real HTTP: malformed XML, XML entities,
wrong encodings, huge fields and random JSON never crash the gateway; each gets a clear 4xx (or, when it is a
genuine message after all, a 200)."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels.app import create_app
from channels.platform_simulators.wechat import WeChatSimulator
from channels.platform_simulators.wecom import WeComSimulator
from channels.platform_simulators.wecom_callbacks import WeComCallbacks
from tests.channels.support import FakeRasa, make_settings
from tests.channels.wecom_support import (
    AES_KEY,
    APP_ID,
    APP_SECRET,
    CORP_ID,
    SECRET,
    TOKEN,
    miniprogram_env,
    wecom_env,
)


@dataclass
class ThreadedGateway:
    url: str
    wechat: WeChatSimulator
    rasa: FakeRasa


@pytest.fixture(scope="module")
def threaded_gateway(tmp_path_factory: pytest.TempPathFactory, template_database: Path) -> Iterator[ThreadedGateway]:
    """The gateway, a fake Rasa and the platform simulators on a loop of their own, so sync hypothesis tests can
    speak plain HTTP to them."""
    import shutil

    tmp = tmp_path_factory.mktemp("fuzz")
    shutil.copyfile(template_database, tmp / "bank.db")
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, object] = {}
    runners: list[web.AppRunner] = []

    async def serve(app: web.Application) -> str:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    async def start() -> None:
        rasa, wecom, wechat = FakeRasa(), WeComSimulator(CORP_ID, SECRET), WeChatSimulator(APP_ID, APP_SECRET)
        rasa.url = await serve(rasa.app())
        wecom_url, wechat_url = await serve(wecom.app()), await serve(wechat.app())
        gateway_settings = make_settings(
            tmp,
            rasa_url=rasa.url,
            database_url=f"sqlite:///{tmp / 'bank.db'}",
            **wecom_env(wecom_url, BANKBOT_WECOM_RATE_LIMIT_PER_MINUTE="0"),
            **miniprogram_env(wechat_url, BANKBOT_MINIPROGRAM_RATE_LIMIT_PER_MINUTE="0"),
        )
        state.update(url=await serve(create_app(gateway_settings)), wechat=wechat, rasa=rasa)
        ready.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(30), "the gateway did not start"
    try:
        yield ThreadedGateway(url=str(state["url"]), wechat=state["wechat"], rasa=state["rasa"])  # type: ignore[arg-type]
    finally:

        async def stop() -> None:
            for runner in reversed(runners):
                await runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as error:
        error.read()
        return int(error.code)


CALLBACKS = WeComCallbacks(TOKEN, AES_KEY, CORP_ID)

xml_fragments = st.sampled_from(
    [
        b'<?xml version="1.0" encoding="GBK"?>',
        b"<!DOCTYPE xml [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;'>]>",
        b'<!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
        b"&x;",
        b"<Encrypt>",
        b"]]>",
        b"<![CDATA[",
        b"\xff\xfe",
        b"\x00",
        "中文".encode("gbk"),
        b"<xml>",
        b"</xml>",
    ]
)


@st.composite
def mutated_callbacks(draw: st.DrawFn) -> tuple[dict[str, str], bytes]:
    callback = CALLBACKS.text("wangwei", draw(st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=50)))
    body = bytearray(callback.body)
    for _ in range(draw(st.integers(0, 4))):
        choice = draw(st.integers(0, 3))
        position = draw(st.integers(0, len(body)))
        if choice == 0 and body:
            del body[position : position + draw(st.integers(1, 20))]
        elif choice == 1:
            body[position:position] = draw(xml_fragments)
        elif choice == 2:
            body[position:position] = draw(st.binary(max_size=30))
        elif body:
            body[min(position, len(body) - 1)] ^= draw(st.integers(1, 255))
    if draw(st.booleans()):
        body += b"<Huge>" + b"x" * draw(st.integers(0, 120_000)) + b"</Huge>"
    query = dict(callback.query)
    if draw(st.booleans()):
        key = draw(st.sampled_from(sorted(query)))
        query[key] = draw(st.text(max_size=80))
    return query, bytes(body)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutated_callbacks())
def test_mutated_wecom_callbacks_never_crash_the_gateway(
    threaded_gateway: ThreadedGateway, case: tuple[dict[str, str], bytes]
) -> None:
    query, body = case
    url = f"{threaded_gateway.url}/wecom/callback?{urllib.parse.urlencode(query)}"
    status = http("POST", url, body, {"Content-Type": "text/xml"})
    assert status in {200, 400, 403, 413}, status


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@st.composite
def message_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:
        return json.dumps(draw(json_values)).encode()
    body = {"type": draw(st.sampled_from(["text", "voice", "image", ""])), "text": draw(st.text(max_size=600))}
    if kind == 3:
        body.update(format=draw(st.sampled_from(["pcm", "mp3", "amr", ""])), audio=draw(st.text(max_size=60)))
        body["sample_rate"] = draw(st.integers(-5, 100_000))
    return json.dumps(body, ensure_ascii=draw(st.booleans())).encode()


@pytest.fixture(scope="module")
def miniprogram_token(threaded_gateway: ThreadedGateway) -> str:
    code = threaded_gateway.wechat.issue_login_code("o-fuzzer")
    request = urllib.request.Request(
        f"{threaded_gateway.url}/miniprogram/login",
        data=json.dumps({"code": code}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(json.loads(response.read())["token"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message_bodies())
def test_random_mini_program_messages_get_a_reply_or_a_clear_4xx(
    threaded_gateway: ThreadedGateway, miniprogram_token: str, body: bytes
) -> None:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {miniprogram_token}"}
    status = http("POST", f"{threaded_gateway.url}/miniprogram/messages", body, headers)
    assert status in {200, 400, 413, 415, 422, 503}, status
