"""The mini-program adapter through its HTTP endpoints, against a fake Rasa and the WeChat API simulator."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bankcore import customers, subscriptions
from bankcore.database import unit_of_work
from bankcore.models import ChannelInboxMessage
from tests.channels.support import FakeRasa, latest_code
from tests.channels.wecom_support import TEMPLATE_ID, WeChatPlatform, miniprogram_env

Client = TestClient[web.Request, web.Application]
BOUND_OPENID = "oDemo-C001-wangwei"  # C001 in the demo bank


@pytest.fixture
async def gateway(start_gateway: Callable[..., Any], fake_rasa: FakeRasa, wechat_platform: WeChatPlatform) -> Client:
    client: Client = await start_gateway(fake_rasa.url, **miniprogram_env(wechat_platform.url))
    return client


async def login(client: Client, platform: WeChatPlatform, openid: str, unionid: str | None = None) -> dict[str, Any]:
    code = platform.simulator.issue_login_code(openid, unionid)
    response = await client.post("/miniprogram/login", json={"code": code})
    assert response.status == 200, await response.text()
    return dict(await response.json())


async def say(client: Client, token: str, text: str) -> list[str]:
    response = await client.post(
        "/miniprogram/messages", json={"type": "text", "text": text}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status == 200, await response.text()
    return [m["text"] for m in (await response.json())["messages"]]


async def test_login_exchanges_the_code_and_never_returns_or_logs_the_session_key(
    gateway: Client, wechat_platform: WeChatPlatform, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = await login(gateway, wechat_platform, BOUND_OPENID)
    assert body["bound"] is True and body["expires_in"] == 7200 and body["token"]
    session_key = wechat_platform.simulator.session_keys[BOUND_OPENID]
    assert session_key not in str(body)
    assert session_key not in caplog.text
    assert body["token"].count(".") == 3


async def test_login_refuses_invalid_and_reused_codes_and_reports_wechat_down(
    gateway: Client, wechat_platform: WeChatPlatform
) -> None:
    response = await gateway.post("/miniprogram/login", json={"code": "not-a-code"})
    assert response.status == 401
    code = wechat_platform.simulator.issue_login_code("o-reuse")
    assert (await gateway.post("/miniprogram/login", json={"code": code})).status == 200
    assert (await gateway.post("/miniprogram/login", json={"code": code})).status == 401
    wechat_platform.simulator.down = True
    response = await gateway.post("/miniprogram/login", json={"code": "x"})
    assert response.status == 503
    assert (await response.json())["error"]["code"] == "wechat_unavailable"
    assert (await gateway.post("/miniprogram/login", json={"code": 5})).status == 400
    assert (
        await gateway.post("/miniprogram/login", data=b"{", headers={"Content-Type": "application/json"})
    ).status == 400


async def test_a_bound_user_talks_as_the_customer(
    gateway: Client, wechat_platform: WeChatPlatform, fake_rasa: FakeRasa
) -> None:
    token = (await login(gateway, wechat_platform, BOUND_OPENID))["token"]
    assert await say(gateway, token, "查余额") == ["收到：查余额"]
    sent = fake_rasa.received[-1]
    assert sent["sender"] == "miniprogram:C001"
    assert sent["metadata"]["customer_id"] == "C001" and sent["metadata"]["channel"] == "miniprogram"


async def test_an_unbound_user_binds_and_the_unionid_is_linked_too(
    gateway: Client, wechat_platform: WeChatPlatform, fake_rasa: FakeRasa, session_factory: sessionmaker[Session]
) -> None:
    body = await login(gateway, wechat_platform, "o-new-user", "u-new-user")
    assert body["bound"] is False
    token = body["token"]
    await say(gateway, token, "利率是多少")
    assert "customer_id" not in fake_rasa.received[-1]["metadata"]
    assert "手机号" in (await say(gateway, token, "绑定"))[0]
    assert "尾号3221" in (await say(gateway, token, "13700133221"))[0]  # C003
    assert "绑定成功" in (await say(gateway, token, latest_code(session_factory, "C003")))[0]
    with unit_of_work(session_factory) as session:
        assert customers.resolve_identity(session, "miniprogram_openid", "o-new-user") == "C003"
        assert customers.resolve_identity(session, "miniprogram_unionid", "u-new-user") == "C003"
    # Another mini-program of the bank (another openid, the same unionid) is recognised at once.
    assert (await login(gateway, wechat_platform, "o-other-app", "u-new-user"))["bound"] is True


async def test_an_unknown_phone_number_looks_the_same_and_never_binds(
    gateway: Client, wechat_platform: WeChatPlatform, session_factory: sessionmaker[Session]
) -> None:
    token = (await login(gateway, wechat_platform, "o-prober"))["token"]
    await say(gateway, token, "绑定")
    reply = (await say(gateway, token, "13012345678"))[0]
    assert "尾号5678" in reply and "验证码" in reply
    assert "不正确" in (await say(gateway, token, "123456"))[0]
    assert "不正确" in (await say(gateway, token, "654321"))[0]
    assert "次数过多" in (await say(gateway, token, "111111"))[0]
    with unit_of_work(session_factory) as session:
        assert customers.resolve_identity(session, "miniprogram_openid", "o-prober") is None


async def test_tokens_are_checked(gateway: Client) -> None:
    for headers in ({}, {"Authorization": "Bearer forged.token.value.x"}, {"Authorization": "Basic abc"}):
        response = await gateway.post("/miniprogram/messages", json={"type": "text", "text": "hi"}, headers=headers)
        assert response.status == 401


async def test_subscription_consent_is_recorded_per_template(
    gateway: Client, wechat_platform: WeChatPlatform, session_factory: sessionmaker[Session]
) -> None:
    token = (await login(gateway, wechat_platform, BOUND_OPENID))["token"]
    headers = {"Authorization": f"Bearer {token}"}
    for result, expected in (("accept", 1), ("accept", 2), ("reject", 2)):
        response = await gateway.post(
            "/miniprogram/subscriptions", json={"template_id": TEMPLATE_ID, "result": result}, headers=headers
        )
        assert response.status == 200
        assert (await response.json())["remaining"] == expected
    bad = await gateway.post(
        "/miniprogram/subscriptions", json={"template_id": "", "result": "accept"}, headers=headers
    )
    assert bad.status == 400
    with unit_of_work(session_factory) as session:
        assert subscriptions.remaining(session, openid=BOUND_OPENID, template_id=TEMPLATE_ID) == 2


async def test_voice_without_a_recogniser_is_refused_politely(gateway: Client, wechat_platform: WeChatPlatform) -> None:
    token = (await login(gateway, wechat_platform, BOUND_OPENID))["token"]
    audio = base64.b64encode(b"\x00\x00" * 16000).decode()
    response = await gateway.post(
        "/miniprogram/messages",
        json={"type": "voice", "format": "pcm", "sample_rate": 16000, "audio": audio},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status == 503
    assert (await response.json())["error"]["code"] == "voice_unavailable"
    socket = await gateway.ws_connect(f"/miniprogram/voice?token={token}")
    frame = await socket.receive_json()
    assert frame["type"] == "error" and frame["code"] == "voice_unavailable"
    await socket.close()


async def test_bodies_have_limits_and_bad_input_gets_clear_errors(
    gateway: Client, wechat_platform: WeChatPlatform
) -> None:
    token = (await login(gateway, wechat_platform, BOUND_OPENID))["token"]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    huge = b'{"type": "voice", "audio": "' + b"A" * (4 * 1024 * 1024) + b'"}'
    assert (await gateway.post("/miniprogram/messages", data=huge, headers=headers)).status == 413
    long_text = b'{"type": "text", "text": "' + "字".encode() * 30000 + b'"}'
    assert (await gateway.post("/miniprogram/messages", data=long_text, headers=headers)).status == 413
    assert (await gateway.post("/miniprogram/messages", data=b"[1]", headers=headers)).status == 400
    assert (await gateway.post("/miniprogram/messages", data=b'{"type": "video"}', headers=headers)).status == 400
    assert (await gateway.post("/miniprogram/messages", data=b'{"type": "text"}', headers=headers)).status == 400


async def test_unconfigured_login_answers_503(start_gateway: Callable[..., Any], fake_rasa: FakeRasa) -> None:
    client: Client = await start_gateway(fake_rasa.url)
    assert (await client.post("/miniprogram/login", json={"code": "x"})).status == 503


async def send_with_id(client: Client, token: str, text: str, msg_id: str) -> tuple[int, dict[str, Any], bool]:
    response = await client.post(
        "/miniprogram/messages",
        json={"type": "text", "text": text, "msg_id": msg_id},
        headers={"Authorization": f"Bearer {token}"},
    )
    return response.status, dict(await response.json()), response.headers.get("X-Bankbot-Replayed") == "1"


async def test_a_retried_message_gets_the_first_reply_without_a_second_turn(
    gateway: Client, wechat_platform: WeChatPlatform, fake_rasa: FakeRasa, session_factory: sessionmaker[Session]
) -> None:
    token = (await login(gateway, wechat_platform, BOUND_OPENID))["token"]
    first = await send_with_id(gateway, token, "确认转账", "m-001")
    assert first[0] == 200 and first[1]["messages"][0]["text"] == "收到：确认转账" and not first[2]
    again = await send_with_id(gateway, token, "确认转账", "m-001")
    assert again[0] == 200 and again[1] == first[1] and again[2]
    assert fake_rasa.texts_sent().count("确认转账") == 1
    # The next message (a new id) is a new turn.
    assert (await send_with_id(gateway, token, "确认转账", "m-002"))[2] is False
    assert fake_rasa.texts_sent().count("确认转账") == 2
    with unit_of_work(session_factory) as session:
        row = session.scalars(
            select(ChannelInboxMessage).where(ChannelInboxMessage.platform_msg_id == f"{BOUND_OPENID}:m-001")
        ).one()
        assert row.status == "answered" and row.duplicates == 1
        assert row.sealed_body and "确认转账" not in row.sealed_body  # the kept reply is sealed


async def test_a_retry_sent_while_the_first_request_runs_waits_for_its_reply(
    gateway: Client, wechat_platform: WeChatPlatform, fake_rasa: FakeRasa
) -> None:
    token = (await login(gateway, wechat_platform, BOUND_OPENID))["token"]
    fake_rasa.delay_s = 0.8
    first = asyncio.create_task(send_with_id(gateway, token, "查余额", "slow-1"))
    await asyncio.sleep(0.2)
    retry = await send_with_id(gateway, token, "查余额", "slow-1")
    original = await first
    assert original[0] == retry[0] == 200 and retry[1] == original[1] and retry[2] and not original[2]
    assert fake_rasa.texts_sent().count("查余额") == 1


async def test_a_retry_after_a_failed_turn_runs_it_again(
    gateway: Client, wechat_platform: WeChatPlatform, fake_rasa: FakeRasa
) -> None:
    token = (await login(gateway, wechat_platform, BOUND_OPENID))["token"]
    fake_rasa.fail_with_status = 503
    failed = await send_with_id(gateway, token, "查余额", "f-1")
    assert failed[0] == 503 and failed[1]["error"]["code"] == "assistant_unavailable"
    fake_rasa.fail_with_status = None
    retried = await send_with_id(gateway, token, "查余额", "f-1")
    assert retried[0] == 200 and retried[1]["messages"][0]["text"] == "收到：查余额" and not retried[2]


async def test_message_ids_are_per_user_and_checked(
    gateway: Client, wechat_platform: WeChatPlatform, fake_rasa: FakeRasa
) -> None:
    mine = (await login(gateway, wechat_platform, BOUND_OPENID))["token"]
    theirs = (await login(gateway, wechat_platform, "o-someone-else"))["token"]
    assert (await send_with_id(gateway, mine, "查余额", "same-id"))[0] == 200
    other = await send_with_id(gateway, theirs, "利率是多少", "same-id")
    assert other[0] == 200 and other[1]["messages"][0]["text"] == "收到：利率是多少" and not other[2]
    for bad in ("", "x" * 65, "含中文", "a b"):
        assert (await send_with_id(gateway, mine, "查余额", bad))[0] == 400
    response = await gateway.post(
        "/miniprogram/messages",
        json={"type": "text", "text": "hi", "msg_id": 7},
        headers={"Authorization": f"Bearer {mine}"},
    )
    assert response.status == 400 and (await response.json())["error"]["code"] == "invalid_msg_id"
