"""The WeCom and WeChat API clients against the platform simulators on loopback: tokens, errors, media, login."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from channels.miniprogram.api import MiniProgramSession, SubscriptionRefused, WeChatApi, WeChatApiError
from channels.platform_api import HTTP_STATUS_ERROR, MEDIA_TOO_LARGE, UNREACHABLE
from channels.platform_simulators import PlatformSimulator
from channels.platform_simulators.wechat import WeChatSimulator
from channels.platform_simulators.wecom import WeComSimulator
from channels.wecom.api import WeComApi, WeComApiError

CORP_ID = "ww0123456789abcdef"
CORP_SECRET = "corp-secret-0123456789-abcdefghijklmnop"
AGENT_ID = 1000002
APP_ID = "wx0123456789abcdef"
APP_SECRET = "app-secret-fedcba9876543210"
TEMPLATE = "tmpl-card-due-reminder"
REMINDER_DATA = {"thing1": {"value": "信用卡还款提醒"}, "time2": {"value": "2024-06-30"}}

Sim = TypeVar("Sim", bound=PlatformSimulator)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def text_to(touser: str, content: str = "您的转账已完成") -> dict[str, Any]:
    return {"touser": touser, "msgtype": "text", "agentid": AGENT_ID, "text": {"content": content}}


async def serve(sim: Sim) -> tuple[Sim, TestServer, str]:
    server = TestServer(sim.app(), host="127.0.0.1")
    await server.start_server()
    return sim, server, str(server.make_url("")).rstrip("/")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def wecom(clock: FakeClock) -> AsyncIterator[tuple[WeComSimulator, str]]:
    sim = WeComSimulator(CORP_ID, CORP_SECRET, users={"ZhangSan", "lisi"}, agent_id=AGENT_ID, clock=clock)
    sim, server, url = await serve(sim)
    yield sim, url
    await server.close()


@pytest.fixture
async def wechat(clock: FakeClock) -> AsyncIterator[tuple[WeChatSimulator, str]]:
    sim, server, url = await serve(WeChatSimulator(APP_ID, APP_SECRET, clock=clock))
    yield sim, url
    await server.close()


def wecom_api(http: aiohttp.ClientSession, url: str, clock: FakeClock, **kwargs: Any) -> WeComApi:
    return WeComApi(http, url, CORP_ID, kwargs.pop("secret", CORP_SECRET), clock=clock, **kwargs)


def wechat_api(http: aiohttp.ClientSession, url: str, clock: FakeClock, **kwargs: Any) -> WeChatApi:
    return WeChatApi(http, url, APP_ID, kwargs.pop("secret", APP_SECRET), clock=clock, **kwargs)


# --- WeCom access token -----------------------------------------------------------------------------


async def test_the_token_is_fetched_once_for_fifty_sends(
    http: aiohttp.ClientSession, wecom: tuple[WeComSimulator, str], clock: FakeClock
) -> None:
    sim, url = wecom
    api = wecom_api(http, url, clock)
    for _ in range(50):
        outcome = await api.send_message(text_to("zhangsan"))
        assert outcome.errcode == 0 and outcome.msgid and not outcome.partial_failure
    assert sim.gettoken_calls == 1
    assert sim.send_calls == 50
    assert len(sim.sent) == 50


async def test_a_token_is_refetched_margin_seconds_before_it_expires(
    http: aiohttp.ClientSession, wecom: tuple[WeComSimulator, str], clock: FakeClock
) -> None:
    sim, url = wecom
    api = wecom_api(http, url, clock, refresh_margin_s=300)
    first = await api.access_token()
    clock.now += 7200 - 301
    assert await api.access_token() == first
    clock.now += 2
    assert await api.access_token() != first
    assert sim.gettoken_calls == 2


async def test_a_token_expired_mid_conversation_is_refreshed_once_and_the_send_succeeds(
    http: aiohttp.ClientSession, wecom: tuple[WeComSimulator, str], clock: FakeClock
) -> None:
    sim, url = wecom
    api = wecom_api(http, url, clock)
    await api.send_message(text_to("zhangsan", "第一条"))
    sim.expire_all_tokens()
    outcome = await api.send_message(text_to("zhangsan", "第二条"))
    assert outcome.errcode == 0
    assert sim.gettoken_calls == 2
    assert sim.send_calls == 3  # the one that met 42001, then its retry
    assert [entry["body"]["text"]["content"] for entry in sim.sent] == ["第一条", "第二条"]


async def test_a_revoked_token_40014_is_refreshed_too(
    http: aiohttp.ClientSession, wecom: tuple[WeComSimulator, str], clock: FakeClock
) -> None:
    sim, url = wecom
    api = wecom_api(http, url, clock)
    await api.access_token()
    sim.revoke_all_tokens()
    assert (await api.send_message(text_to("lisi"))).errcode == 0
    assert sim.gettoken_calls == 2


async def test_a_hundred_senders_after_platform_expiry_share_one_gettoken(
    http: aiohttp.ClientSession, wecom: tuple[WeComSimulator, str], clock: FakeClock
) -> None:
    sim, url = wecom
    api = wecom_api(http, url, clock)
    await api.send_message(text_to("zhangsan"))
    sim.expire_all_tokens()
    outcomes = await asyncio.gather(*(api.send_message(text_to("zhangsan", f"第{i}条")) for i in range(100)))
    assert all(outcome.errcode == 0 for outcome in outcomes)
    assert sim.gettoken_calls == 2  # the first token, then exactly one refresh for all hundred
    assert len(sim.sent) == 101


async def test_a_hundred_senders_after_local_expiry_share_one_gettoken(
    http: aiohttp.ClientSession, wecom: tuple[WeComSimulator, str], clock: FakeClock
) -> None:
    sim, url = wecom
    api = wecom_api(http, url, clock)
    await api.access_token()
    clock.now += 7200
    outcomes = await asyncio.gather(*(api.send_message(text_to("lisi")) for _ in range(100)))
    assert all(outcome.errcode == 0 for outcome in outcomes)
    assert sim.gettoken_calls == 2
    assert sim.send_calls == 100  # nobody sent with the stale token


async def test_a_failed_gettoken_is_shared_by_the_waiters_and_retried_by_the_next_call(
    http: aiohttp.ClientSession, wecom: tuple[WeComSimulator, str], clock: FakeClock
) -> None:
    sim, url = wecom
    api = wecom_api(http, url, clock)
    sim.fail_next(1, -1, endpoint="gettoken")
    results = await asyncio.gather(*(api.access_token() for _ in range(10)), return_exceptions=True)
    assert all(isinstance(result, WeComApiError) and result.errcode == -1 for result in results)
    assert sim.gettoken_calls == 1
    assert await api.access_token()
    assert sim.gettoken_calls == 2


async def test_a_cancelled_waiter_does_not_cancel_the_shared_fetch(
    http: aiohttp.ClientSession, wecom: tuple[WeComSimulator, str], clock: FakeClock
) -> None:
    sim, url = wecom
    api = wecom_api(http, url, clock)
    sim.latency_s = 0.2
    first = asyncio.create_task(api.access_token())
    second = asyncio.create_task(api.access_token())
    await asyncio.sleep(0.05)
    first.cancel()
    assert await second
    assert first.cancelled()
    assert sim.gettoken_calls == 1


async def test_invalidate_forgets_only_the_token_still_cached(
    http: aiohttp.ClientSession, wecom: tuple[WeComSimulator, str], clock: FakeClock
) -> None:
    sim, url = wecom
    api = wecom_api(http, url, clock)
    old = await api.access_token()
    await api.invalidate(old)
    new = await api.access_token()
    await api.invalidate(old)  # a late caller that also met 42001 on the old token
    assert await api.access_token() == new
    assert sim.gettoken_calls == 2


# --- WeCom errors -----------------------------------------------------------------------------------


async def test_a_wrong_secret_is_40001_and_not_retryable(
    http: aiohttp.ClientSession, wecom: tuple[WeComSimulator, str], clock: FakeClock
) -> None:
    _sim, url = wecom
    with pytest.raises(WeComApiError) as raised:
        await wecom_api(http, url, clock, secret="not-the-secret").send_message(text_to("lisi"))
    assert raised.value.errcode == 40001
    assert not raised.value.retryable
    assert "not-the-secret" not in str(raised.value) + repr(raised.value)


async def test_a_wrong_corp_id_is_40013(
    http: aiohttp.ClientSession, wecom: tuple[WeComSimulator, str], clock: FakeClock
) -> None:
    _sim, url = wecom
    with pytest.raises(WeComApiError) as raised:
        await WeComApi(http, url, "ww-wrong", CORP_SECRET, clock=clock).access_token()
    assert (raised.value.errcode, raised.value.retryable) == (40013, False)


async def test_system_busy_is_retryable_and_the_next_send_succeeds(
    http: aiohttp.ClientSession, wecom: tuple[WeComSimulator, str], clock: FakeClock
) -> None:
    sim, url = wecom
    api = wecom_api(http, url, clock)
    sim.fail_next(1, -1, endpoint="message/send")
    with pytest.raises(WeComApiError) as raised:
        await api.send_message(text_to("lisi"))
    assert (raised.value.errcode, raised.value.retryable) == (-1, True)
    assert (await api.send_message(text_to("lisi"))).errcode == 0
    assert len(sim.sent) == 1


async def test_the_frequency_limit_45009_is_retryable(
    http: aiohttp.ClientSession, wecom: tuple[WeComSimulator, str], clock: FakeClock
) -> None:
    sim, url = wecom
    api = wecom_api(http, url, clock)
    await api.access_token()
    sim.rate_limit_per_s = 3
    results = await asyncio.gather(*(api.send_message(text_to("lisi")) for _ in range(5)), return_exceptions=True)
    limited = [result for result in results if isinstance(result, WeComApiError)]
    assert len(limited) == 2
    assert all(error.errcode == 45009 and error.retryable for error in limited)
    clock.now += 1.0
    assert (await api.send_message(text_to("lisi"))).errcode == 0


async def test_http_502_is_retryable(
    http: aiohttp.ClientSession, wecom: tuple[WeComSimulator, str], clock: FakeClock
) -> None:
    sim, url = wecom
    api = wecom_api(http, url, clock)
    sim.fail_next_http(1, 502, endpoint="message/send")
    with pytest.raises(WeComApiError) as raised:
        await api.send_message(text_to("lisi"))
    assert (raised.value.errcode, raised.value.http_status, raised.value.retryable) == (HTTP_STATUS_ERROR, 502, True)
    assert (await api.send_message(text_to("lisi"))).errcode == 0


async def test_http_4xx_is_not_retryable(
    http: aiohttp.ClientSession, wecom: tuple[WeComSimulator, str], clock: FakeClock
) -> None:
    sim, url = wecom
    sim.fail_next_http(1, 403)
    with pytest.raises(WeComApiError) as raised:
        await wecom_api(http, url, clock).access_token()
    assert (raised.value.http_status, raised.value.retryable) == (403, False)


async def test_a_platform_outage_is_retryable(
    http: aiohttp.ClientSession, wecom: tuple[WeComSimulator, str], clock: FakeClock
) -> None:
    sim, url = wecom
    api = wecom_api(http, url, clock)
    sim.down = True
    with pytest.raises(WeComApiError) as raised:
        await api.send_message(text_to("lisi"))
    assert (raised.value.http_status, raised.value.retryable) == (503, True)
    sim.down = False
    assert (await api.send_message(text_to("lisi"))).errcode == 0


async def test_a_slow_platform_times_out_retryably(
    http: aiohttp.ClientSession, wecom: tuple[WeComSimulator, str], clock: FakeClock
) -> None:
    sim, url = wecom
    sim.latency_s = 1.0
    with pytest.raises(WeComApiError) as raised:
        await wecom_api(http, url, clock, timeout_s=0.1).access_token()
    assert (raised.value.errcode, raised.value.retryable) == (UNREACHABLE, True)
    assert "timed out" in raised.value.errmsg


async def test_an_unreachable_platform_is_retryable_and_the_url_stays_out_of_the_error(
    http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(WeComApiError) as raised:
        await wecom_api(http, f"http://127.0.0.1:{port}", clock).access_token()
    assert (raised.value.errcode, raised.value.retryable) == (UNREACHABLE, True)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert CORP_SECRET not in str(raised.value)


async def test_unknown_recipients_are_a_partial_failure_not_an_error(
    http: aiohttp.ClientSession, wecom: tuple[WeComSimulator, str], clock: FakeClock
) -> None:
    sim, url = wecom
    outcome = await wecom_api(http, url, clock).send_message(
        {**text_to("ZhangSan|WangWu|zhaoliu"), "toparty": "2", "totag": "7"}
    )
    assert outcome.errcode == 0 and outcome.msgid
    assert outcome.partial_failure
    assert outcome.invalid_users == ("wangwu", "zhaoliu")  # lowercased, as the platform does
    assert (outcome.invalid_parties, outcome.invalid_tags) == (("2",), ("7",))
    assert sim.sent[0]["delivered_to"] == ["zhangsan"]


async def test_unlicensed_users_are_reported(http: aiohttp.ClientSession, clock: FakeClock) -> None:
    sim, server, url = await serve(
        WeComSimulator(CORP_ID, CORP_SECRET, users={"a", "b"}, unlicensed_users={"b"}, clock=clock)
    )
    try:
        outcome = await wecom_api(http, url, clock).send_message(text_to("a|b"))
    finally:
        await server.close()
    assert outcome.unlicensed_users == ("b",) and outcome.partial_failure
    assert sim.sent[0]["delivered_to"] == ["a"]


async def test_no_valid_recipient_is_81013(
    http: aiohttp.ClientSession, wecom: tuple[WeComSimulator, str], clock: FakeClock
) -> None:
    sim, url = wecom
    with pytest.raises(WeComApiError) as raised:
        await wecom_api(http, url, clock).send_message(text_to("nobody|ghost"))
    assert (raised.value.errcode, raised.value.retryable) == (81013, False)
    assert sim.sent == []


async def test_markdown_and_a_button_card_are_accepted_and_the_card_gets_a_response_code(
    http: aiohttp.ClientSession, wecom: tuple[WeComSimulator, str], clock: FakeClock
) -> None:
    sim, url = wecom
    api = wecom_api(http, url, clock)
    markdown = {"touser": "lisi", "msgtype": "markdown", "agentid": AGENT_ID, "markdown": {"content": "**余额**"}}
    assert (await api.send_message(markdown)).response_code is None
    card = {
        "touser": "lisi",
        "msgtype": "template_card",
        "agentid": AGENT_ID,
        "template_card": {
            "card_type": "button_interaction",
            "main_title": {"title": "确认转账", "desc": "向王芳转账 500.00 元"},
            "task_id": "transfer-T123",
            "button_list": [
                {"text": "确认", "style": 1, "key": "confirm"},
                {"text": "取消", "style": 2, "key": "cancel"},
            ],
        },
    }
    outcome = await api.send_message(card)
    assert outcome.response_code
    assert sim.sent[-1]["body"]["template_card"]["task_id"] == "transfer-T123"


async def test_a_malformed_message_is_rejected_with_its_errcode(
    http: aiohttp.ClientSession, wecom: tuple[WeComSimulator, str], clock: FakeClock
) -> None:
    _sim, url = wecom
    api = wecom_api(http, url, clock)
    with pytest.raises(WeComApiError) as raised:
        await api.send_message(text_to("lisi", ""))
    assert raised.value.errcode == 44004
    with pytest.raises(WeComApiError) as raised:
        await api.send_message({**text_to("lisi"), "agentid": 999})
    assert raised.value.errcode == 40056


# --- WeCom media --------------------------------------------------------------------------------------


async def test_media_is_downloaded_with_its_content_type(
    http: aiohttp.ClientSession, wecom: tuple[WeComSimulator, str], clock: FakeClock
) -> None:
    sim, url = wecom
    voice = b"#!AMR\n" + bytes(range(256)) * 40
    sim.add_media("MEDIA_voice_1", voice)
    assert await wecom_api(http, url, clock).download_media("MEDIA_voice_1") == (voice, "audio/amr")


async def test_an_unknown_media_id_is_40007(
    http: aiohttp.ClientSession, wecom: tuple[WeComSimulator, str], clock: FakeClock
) -> None:
    _sim, url = wecom
    with pytest.raises(WeComApiError) as raised:
        await wecom_api(http, url, clock).download_media("MEDIA_expired")
    assert (raised.value.errcode, raised.value.retryable) == (40007, False)


async def test_media_over_the_limit_is_refused(
    http: aiohttp.ClientSession, wecom: tuple[WeComSimulator, str], clock: FakeClock
) -> None:
    sim, url = wecom
    sim.add_media("MEDIA_big", b"\0" * 5000, "image/jpeg")
    with pytest.raises(WeComApiError) as raised:
        await wecom_api(http, url, clock).download_media("MEDIA_big", max_bytes=4096)
    assert (raised.value.errcode, raised.value.errmsg.startswith("media too large")) == (MEDIA_TOO_LARGE, True)
    assert not raised.value.retryable


async def test_media_download_refreshes_an_expired_token_once(
    http: aiohttp.ClientSession, wecom: tuple[WeComSimulator, str], clock: FakeClock
) -> None:
    sim, url = wecom
    sim.add_media("MEDIA_voice_2", b"#!AMR\n...")
    api = wecom_api(http, url, clock)
    await api.access_token()
    sim.expire_all_tokens()
    assert (await api.download_media("MEDIA_voice_2"))[0] == b"#!AMR\n..."
    assert (sim.gettoken_calls, sim.media_calls) == (2, 2)


# --- WeChat mini-program login --------------------------------------------------------------------


async def test_code2session_returns_openid_unionid_and_the_session_key(
    http: aiohttp.ClientSession, wechat: tuple[WeChatSimulator, str], clock: FakeClock
) -> None:
    sim, url = wechat
    code = sim.issue_login_code("o-openid-1", unionid="u-union-1")
    session = await wechat_api(http, url, clock).code2session(code)
    assert (session.openid, session.unionid) == ("o-openid-1", "u-union-1")
    assert session.session_key == sim.session_keys["o-openid-1"]
    assert session.session_key not in repr(session) and session.session_key not in str(session)
    without_unionid = await wechat_api(http, url, clock).code2session(sim.issue_login_code("o-openid-2"))
    assert without_unionid.unionid is None


async def test_an_invalid_code_is_40029(
    http: aiohttp.ClientSession, wechat: tuple[WeChatSimulator, str], clock: FakeClock
) -> None:
    _sim, url = wechat
    with pytest.raises(WeChatApiError) as raised:
        await wechat_api(http, url, clock).code2session("made-up-code")
    assert (raised.value.errcode, raised.value.retryable) == (40029, False)


async def test_a_reused_code_is_40163(
    http: aiohttp.ClientSession, wechat: tuple[WeChatSimulator, str], clock: FakeClock
) -> None:
    sim, url = wechat
    api = wechat_api(http, url, clock)
    code = sim.issue_login_code("o-openid-1")
    await api.code2session(code)
    with pytest.raises(WeChatApiError) as raised:
        await api.code2session(code)
    assert (raised.value.errcode, raised.value.retryable) == (40163, False)


async def test_a_code_older_than_five_minutes_is_invalid(
    http: aiohttp.ClientSession, wechat: tuple[WeChatSimulator, str], clock: FakeClock
) -> None:
    sim, url = wechat
    code = sim.issue_login_code("o-openid-1")
    clock.now += 301
    with pytest.raises(WeChatApiError) as raised:
        await wechat_api(http, url, clock).code2session(code)
    assert raised.value.errcode == 40029


async def test_the_login_minute_quota_45011_is_retryable(
    http: aiohttp.ClientSession, wechat: tuple[WeChatSimulator, str], clock: FakeClock
) -> None:
    sim, url = wechat
    sim.fail_next(1, 45011, endpoint="sns/jscode2session")
    with pytest.raises(WeChatApiError) as raised:
        await wechat_api(http, url, clock).code2session(sim.issue_login_code("o-openid-1"))
    assert (raised.value.errcode, raised.value.retryable) == (45011, True)


async def test_a_wrong_app_secret_is_40001_and_a_wrong_app_id_40013(
    http: aiohttp.ClientSession, wechat: tuple[WeChatSimulator, str], clock: FakeClock
) -> None:
    sim, url = wechat
    with pytest.raises(WeChatApiError) as raised:
        await wechat_api(http, url, clock, secret="wrong").access_token()
    assert (raised.value.errcode, raised.value.retryable) == (40001, False)
    with pytest.raises(WeChatApiError) as raised:
        await WeChatApi(http, url, "wx-wrong", APP_SECRET, clock=clock).code2session(sim.issue_login_code("o1"))
    assert raised.value.errcode == 40013


# --- WeChat subscribe messages --------------------------------------------------------------------


async def test_a_subscribe_message_is_sent_once_per_consent(
    http: aiohttp.ClientSession, wechat: tuple[WeChatSimulator, str], clock: FakeClock
) -> None:
    sim, url = wechat
    api = wechat_api(http, url, clock)
    sim.grant_subscription("o-openid-1", TEMPLATE)
    await api.send_subscribe_message(touser="o-openid-1", template_id=TEMPLATE, data=REMINDER_DATA, page="pages/card")
    assert sim.subscribe_sent[0]["body"] == {
        "touser": "o-openid-1",
        "template_id": TEMPLATE,
        "data": REMINDER_DATA,
        "page": "pages/card",
        "miniprogram_state": "formal",
        "lang": "zh_CN",
    }
    with pytest.raises(SubscriptionRefused) as raised:
        await api.send_subscribe_message(touser="o-openid-1", template_id=TEMPLATE, data=REMINDER_DATA)
    assert (raised.value.errcode, raised.value.retryable) == (43101, False)
    assert len(sim.subscribe_sent) == 1


async def test_without_consent_the_message_is_refused(
    http: aiohttp.ClientSession, wechat: tuple[WeChatSimulator, str], clock: FakeClock
) -> None:
    _sim, url = wechat
    with pytest.raises(SubscriptionRefused):
        await wechat_api(http, url, clock).send_subscribe_message(
            touser="o-openid-1", template_id=TEMPLATE, data=REMINDER_DATA
        )


async def test_subscribe_send_refreshes_an_expired_or_superseded_token_once(
    http: aiohttp.ClientSession, wechat: tuple[WeChatSimulator, str], clock: FakeClock
) -> None:
    sim, url = wechat
    api = wechat_api(http, url, clock)
    sim.grant_subscription("o-openid-1", TEMPLATE, count=2)
    await api.access_token()
    sim.expire_all_tokens()  # 42001
    await api.send_subscribe_message(touser="o-openid-1", template_id=TEMPLATE, data=REMINDER_DATA)
    sim.revoke_all_tokens()  # 40001 "access_token is invalid or not latest"
    await api.send_subscribe_message(touser="o-openid-1", template_id=TEMPLATE, data=REMINDER_DATA)
    assert (sim.token_calls, sim.subscribe_calls, len(sim.subscribe_sent)) == (3, 4, 2)


async def test_bad_data_is_47003_and_an_unknown_openid_40003(http: aiohttp.ClientSession, clock: FakeClock) -> None:
    sim, server, url = await serve(WeChatSimulator(APP_ID, APP_SECRET, known_openids={"o-known"}, clock=clock))
    api = wechat_api(http, url, clock)
    sim.grant_subscription("o-known", TEMPLATE)
    try:
        with pytest.raises(WeChatApiError) as raised:
            await api.send_subscribe_message(touser="o-known", template_id=TEMPLATE, data={"thing1": {"value": ""}})
        assert raised.value.errcode == 47003
        with pytest.raises(WeChatApiError) as raised:
            await api.send_subscribe_message(touser="o-stranger", template_id=TEMPLATE, data=REMINDER_DATA)
        assert raised.value.errcode == 40003
    finally:
        await server.close()


async def test_wechat_outages_are_retryable(
    http: aiohttp.ClientSession, wechat: tuple[WeChatSimulator, str], clock: FakeClock
) -> None:
    sim, url = wechat
    api = wechat_api(http, url, clock)
    sim.fail_next_http(1, 502)
    with pytest.raises(WeChatApiError) as raised:
        await api.access_token()
    assert (raised.value.http_status, raised.value.retryable) == (502, True)
    sim.fail_next(1, -1)
    with pytest.raises(WeChatApiError) as raised:
        await api.access_token()
    assert (raised.value.errcode, raised.value.retryable) == (-1, True)
    sim.down = True
    with pytest.raises(WeChatApiError) as raised:
        await api.code2session("any")
    assert raised.value.retryable


# --- secrets stay out of reprs, errors and logs ------------------------------------------------------


def _exception_text(error: BaseException) -> str:
    parts = []
    current: BaseException | None = error
    while current is not None:
        parts += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


async def test_no_secret_token_or_session_key_in_reprs_errors_or_our_logs(
    http: aiohttp.ClientSession,
    wecom: tuple[WeComSimulator, str],
    wechat: tuple[WeChatSimulator, str],
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    wecom_sim, wecom_url = wecom
    wechat_sim, wechat_url = wechat
    work = wecom_api(http, wecom_url, clock)
    mini = wechat_api(http, wechat_url, clock)
    code = wechat_sim.issue_login_code("o-openid-1", unionid="u-1")
    session = await mini.code2session(code)
    secrets_seen = {
        CORP_SECRET,
        APP_SECRET,
        code,
        session.session_key,
        await work.access_token(),
        await mini.access_token(),
    }

    errors: list[BaseException] = []
    attempts: list[Any] = [
        lambda: mini.code2session(code),  # 40163
        lambda: mini.send_subscribe_message(touser="o-openid-1", template_id=TEMPLATE, data=REMINDER_DATA),  # 43101
        lambda: work.download_media("MEDIA_missing"),  # 40007
        lambda: wecom_api(http, wecom_url, clock, timeout_s=0.05).access_token(),  # timeout
    ]
    wecom_sim.latency_s = 0.0
    for index, attempt in enumerate(attempts):
        if index == 3:
            wecom_sim.latency_s = 0.5
        try:
            await attempt()
        except (WeComApiError, WeChatApiError) as error:
            errors.append(error)
    assert len(errors) == len(attempts)

    texts = [repr(work), repr(mini), repr(session), str(session), *(_exception_text(error) for error in errors)]
    texts += [record.getMessage() for record in caplog.records if record.name.startswith("channels.")]
    leaks = sorted({secret for secret in secrets_seen for text in texts if secret in text})
    assert not leaks, "credentials leaked into reprs, errors or logs"
    assert isinstance(session, MiniProgramSession)
