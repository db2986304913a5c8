"""The WeCom adapter through its real HTTP endpoint, against a fake Rasa and the WeCom API simulator."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bankcore import channel_messages
from bankcore.database import unit_of_work
from bankcore.models import ChannelInboxMessage, ChannelOutboxMessage
from channels.wecom.inbound import WECOM_RUNTIME
from tests.channels.support import FakeRasa, latest_code
from tests.channels.wecom_support import (
    WeComPlatform,
    callbacks,
    sent_to,
    texts_to,
    wait_until,
    wecom_env,
)

Client = TestClient[web.Request, web.Application]
# C001 (王伟) is bound to the WeCom user "wangwei" in the demo bank; "newcomer" is bound to no one.
BOUND_USER = "wangwei"


@pytest.fixture
async def gateway(start_gateway: Callable[..., Any], fake_rasa: FakeRasa, wecom_platform: WeComPlatform) -> Client:
    client: Client = await start_gateway(fake_rasa.url, **wecom_env(wecom_platform.url))
    return client


async def post(client: Client, callback: Any) -> tuple[int, str]:
    response = await client.post("/wecom/callback", params=callback.query, data=callback.body)
    return response.status, await response.text()


async def test_tencent_sample_vector_verifies_the_callback_url(
    start_gateway: Callable[..., Any], fake_rasa: FakeRasa
) -> None:
    # Tencent's published vector (old timestamp: the replay window is turned off to replay it).
    client: Client = await start_gateway(
        fake_rasa.url, **wecom_env("http://127.0.0.1:9", BANKBOT_WECOM_REPLAY_WINDOW_SECONDS="0")
    )
    params = {
        "msg_signature": "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3",
        "timestamp": "1409659589",
        "nonce": "263014780",
        "echostr": "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ==",
    }
    response = await client.get("/wecom/callback", params=params)
    assert response.status == 200
    assert await response.text() == "1616140317555161061"
    wrong = dict(params, msg_signature="0" * 40)
    assert (await client.get("/wecom/callback", params=wrong)).status == 403


async def test_url_verification_refuses_another_corp_and_stale_timestamps(
    start_gateway: Callable[..., Any], fake_rasa: FakeRasa
) -> None:
    client: Client = await start_gateway(
        fake_rasa.url, **wecom_env("http://127.0.0.1:9", BANKBOT_WECOM_CORP_ID="ww-another-corp")
    )
    params = callbacks().url_verification("echo-123")  # encrypted for the sample corp id
    response = await client.get("/wecom/callback", params=params)
    assert response.status == 403
    assert (await response.json())["error"]["code"] == "receive_id_mismatch"
    # The vector's 2014 timestamp is far outside the default 300 s window.
    stale = {"msg_signature": "x", "timestamp": "1409659589", "nonce": "1", "echostr": "abc"}
    response = await client.get("/wecom/callback", params=stale)
    assert response.status == 403
    assert (await response.json())["error"]["code"] == "stale_timestamp"


async def test_a_text_message_is_acknowledged_then_answered_through_message_send(
    gateway: Client, fake_rasa: FakeRasa, wecom_platform: WeComPlatform
) -> None:
    status, body = await post(gateway, callbacks().text(BOUND_USER, "查一下余额"))
    assert (status, body) == (200, "")
    await wait_until(lambda: bool(texts_to(wecom_platform.simulator, BOUND_USER)), what="the reply")
    assert texts_to(wecom_platform.simulator, BOUND_USER) == ["收到：查一下余额"]
    sent = fake_rasa.received[-1]
    assert sent["sender"] == "wecom:C001"
    assert sent["metadata"]["customer_id"] == "C001"
    assert sent["metadata"]["channel"] == "wecom"
    assert sent_to(wecom_platform.simulator, BOUND_USER)[0]["agentid"] == 1000002


async def test_retried_callbacks_produce_one_turn_and_one_reply(
    gateway: Client, fake_rasa: FakeRasa, wecom_platform: WeComPlatform, session_factory: sessionmaker[Session]
) -> None:
    callback = callbacks().text(BOUND_USER, "我要挂失")
    # WeCom retries an unanswered callback three times; here all four arrive at once.
    results = await asyncio.gather(*(post(gateway, callback) for _ in range(4)))
    assert all(status == 200 for status, _ in results)
    await wait_until(lambda: bool(texts_to(wecom_platform.simulator, BOUND_USER)), what="the reply")
    await asyncio.sleep(0.3)
    assert fake_rasa.texts_sent() == ["我要挂失"]
    assert len(texts_to(wecom_platform.simulator, BOUND_USER)) == 1
    with unit_of_work(session_factory) as session:
        assert channel_messages.duplicates_seen(session, "wecom") == 3


async def test_buttons_become_a_card_and_a_button_click_is_that_payload(
    gateway: Client, fake_rasa: FakeRasa, wecom_platform: WeComPlatform
) -> None:
    buttons = [{"title": "确认", "payload": "/affirm"}, {"title": "取消", "payload": "/deny"}]
    fake_rasa.responder = lambda body: [{"text": "请确认转账", "buttons": buttons}]
    await post(gateway, callbacks().text(BOUND_USER, "给李四转500"))
    await wait_until(lambda: len(sent_to(wecom_platform.simulator, BOUND_USER)) == 2, what="text and card")
    card = sent_to(wecom_platform.simulator, BOUND_USER)[1]
    assert card["msgtype"] == "template_card"
    assert [b["key"] for b in card["template_card"]["button_list"]] == ["/affirm", "/deny"]
    task_id = card["template_card"]["task_id"]
    await post(gateway, callbacks().event(BOUND_USER, "template_card_event", key="/affirm", task_id=task_id))
    await wait_until(lambda: fake_rasa.texts_sent()[-1:] == ["/affirm"], what="the button's payload")


async def test_an_unbound_user_is_a_guest_until_bound_by_phone_and_sms_code(
    gateway: Client, fake_rasa: FakeRasa, wecom_platform: WeComPlatform, session_factory: sessionmaker[Session]
) -> None:
    sim, user, make = wecom_platform.simulator, "newcomer", callbacks()

    async def say(text: str) -> str:
        before = len(texts_to(sim, user))
        await post(gateway, make.text(user, text))
        await wait_until(lambda: len(texts_to(sim, user)) > before, what=f"the answer to {text!r}")
        return texts_to(sim, user)[-1]

    await say("查余额")
    guest_turn = fake_rasa.received[-1]
    assert guest_turn["sender"].startswith("wecom:guest-")
    assert "customer_id" not in guest_turn["metadata"]
    assert guest_turn["metadata"]["guest"] is True
    assert "手机号" in await say("绑定")
    assert "格式不正确" in await say("12345")
    assert "尾号2334" in await say("139 1102 2334")  # C002's phone
    code = latest_code(session_factory, "C002")
    wrong = "000000" if code != "000000" else "111111"
    assert "不正确" in await say(wrong)
    rasa_calls = len(fake_rasa.received)
    assert "绑定成功" in await say(code)
    # Neither the phone number nor the codes reached Rasa.
    assert len(fake_rasa.received) == rasa_calls
    assert all(code not in text and wrong not in text for text in fake_rasa.texts_sent())
    await say("查余额")
    assert fake_rasa.received[-1]["metadata"]["customer_id"] == "C002"
    assert fake_rasa.received[-1]["sender"] == "wecom:C002"


async def test_an_expired_access_token_mid_conversation_is_refreshed_once(
    gateway: Client, wecom_platform: WeComPlatform
) -> None:
    sim, make = wecom_platform.simulator, callbacks()
    await post(gateway, make.text(BOUND_USER, "你好"))
    await wait_until(lambda: len(texts_to(sim, BOUND_USER)) == 1)
    assert sim.gettoken_calls == 1
    sim.expire_all_tokens()
    await post(gateway, make.text(BOUND_USER, "查余额"))
    await wait_until(lambda: len(texts_to(sim, BOUND_USER)) == 2, what="the reply after the token expired")
    assert sim.gettoken_calls == 2


async def test_replies_survive_the_platform_being_down_and_fail_visibly_when_it_stays_down(
    gateway: Client, wecom_platform: WeComPlatform, session_factory: sessionmaker[Session]
) -> None:
    sim, make = wecom_platform.simulator, callbacks()
    outbox = gateway.app[WECOM_RUNTIME].outbox
    outbox.retry_base_s, outbox.retry_cap_s, outbox.poll_s = 0.05, 0.2, 0.05
    sim.down = True
    await post(gateway, make.text(BOUND_USER, "第一条"))
    await asyncio.sleep(0.4)
    assert texts_to(sim, BOUND_USER) == []
    sim.down = False  # back within the retries: delivered, nothing lost
    await wait_until(lambda: texts_to(sim, BOUND_USER) == ["收到：第一条"], what="the delayed reply")
    outbox.max_attempts = 3
    sim.down = True
    await post(gateway, make.text(BOUND_USER, "第二条"))

    def failed() -> int:
        with unit_of_work(session_factory) as session:
            return channel_messages.outbox_counts(session, "wecom").get("failed", 0)

    await wait_until(lambda: failed() == 1, timeout=10, what="the reply recorded as failed")
    with unit_of_work(session_factory) as session:
        row = session.scalar(select(ChannelOutboxMessage).where(ChannelOutboxMessage.status == "failed"))
        assert row is not None and row.attempts == 3 and row.last_error
        assert row.body["text"]["content"] == "收到：第二条"


async def test_messages_acknowledged_before_a_crash_are_answered_after_restart(
    start_gateway: Callable[..., Any],
    fake_rasa: FakeRasa,
    wecom_platform: WeComPlatform,
    session_factory: sessionmaker[Session],
) -> None:
    env = wecom_env(wecom_platform.url)
    first: Client = await start_gateway(fake_rasa.url, **env)
    await first.app[WECOM_RUNTIME].processor.pause()  # acknowledges, never processes: a gateway about to die
    await post(first, callbacks().text(BOUND_USER, "开机前的消息"))
    await asyncio.sleep(0.2)
    assert texts_to(wecom_platform.simulator, BOUND_USER) == []
    with unit_of_work(session_factory) as session:
        row = session.scalar(select(ChannelInboxMessage))
        assert row is not None and row.status == "received"
        assert "开机前的消息" not in (row.sealed_body or "")  # sealed at rest
    await first.close()
    await start_gateway(fake_rasa.url, **env)
    await wait_until(lambda: texts_to(wecom_platform.simulator, BOUND_USER) == ["收到：开机前的消息"])
    with unit_of_work(session_factory) as session:
        row = session.scalar(select(ChannelInboxMessage))
        assert row is not None and row.status == "answered" and row.sealed_body is None


async def test_entering_the_app_opens_the_conversation_and_unbound_users_get_the_binding_offer(
    gateway: Client, fake_rasa: FakeRasa, wecom_platform: WeComPlatform
) -> None:
    await post(gateway, callbacks().event(BOUND_USER, "enter_agent"))
    await wait_until(lambda: fake_rasa.texts_sent()[-1:] == ["/contact_opened"], what="the opening turn")
    await post(gateway, callbacks().event("stranger", "enter_agent"))
    await wait_until(lambda: bool(texts_to(wecom_platform.simulator, "stranger")))
    assert "绑定" in texts_to(wecom_platform.simulator, "stranger")[0]


async def test_per_user_rate_limit_answers_politely_once(
    start_gateway: Callable[..., Any], fake_rasa: FakeRasa, wecom_platform: WeComPlatform
) -> None:
    client: Client = await start_gateway(
        fake_rasa.url, **wecom_env(wecom_platform.url, BANKBOT_WECOM_RATE_LIMIT_PER_MINUTE="2")
    )
    make = callbacks()
    for index in range(5):
        assert (await post(client, make.text(BOUND_USER, f"消息{index}")))[0] == 200
    await wait_until(lambda: len(texts_to(wecom_platform.simulator, BOUND_USER)) == 3)
    await asyncio.sleep(0.3)
    replies = texts_to(wecom_platform.simulator, BOUND_USER)
    assert sorted(fake_rasa.texts_sent()) == ["消息0", "消息1"]
    assert sum("太快" in reply for reply in replies) == 1


async def test_retries_of_a_stored_message_do_not_use_up_the_users_rate(
    start_gateway: Callable[..., Any], fake_rasa: FakeRasa, wecom_platform: WeComPlatform
) -> None:
    client: Client = await start_gateway(
        fake_rasa.url, **wecom_env(wecom_platform.url, BANKBOT_WECOM_RATE_LIMIT_PER_MINUTE="2")
    )
    make = callbacks()
    first = make.text(BOUND_USER, "第一条")
    for _ in range(4):  # WeCom's three retries of the first message
        assert (await post(client, first))[0] == 200
    assert (await post(client, make.text(BOUND_USER, "第二条")))[0] == 200
    await wait_until(lambda: len(texts_to(wecom_platform.simulator, BOUND_USER)) == 2)
    await asyncio.sleep(0.3)
    assert texts_to(wecom_platform.simulator, BOUND_USER) == ["收到：第一条", "收到：第二条"]
    assert sorted(fake_rasa.texts_sent()) == ["第一条", "第二条"]


ENTITY_BODY = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><xml><Encrypt>&a;</Encrypt></xml>'


@pytest.mark.parametrize(
    ("mutate", "status", "code"),
    [
        (lambda q, b: ({k: v for k, v in q.items() if k != "msg_signature"}, b), 400, "missing_parameters"),
        (lambda q, b: (dict(q, msg_signature="0" * 40), b), 403, "invalid_signature"),
        (lambda q, b: (dict(q, timestamp="abc"), b), 400, "invalid_timestamp"),
        # Superscript digits pass str.isdigit() but not int(): found by the fuzz test as a 500.
        (lambda q, b: (dict(q, timestamp="17²"), b), 400, "invalid_timestamp"),
        (lambda q, b: (dict(q, timestamp="١٧٠٠٠٠٠٠٠٠"), b), 400, "invalid_timestamp"),
        (lambda q, b: (q, b"<xml><Encrypt>"), 400, "malformed_xml"),
        (lambda q, b: (q, b"not xml at all"), 400, "malformed_xml"),
        (lambda q, b: (q, ENTITY_BODY), 400, "forbidden_xml"),
        (lambda q, b: (q, b"<xml><Encrypt><![CDATA[" + b"A" * 70000 + b"]]></Encrypt></xml>"), 413, None),
    ],
)
async def test_bad_callbacks_get_a_clear_4xx(
    gateway: Client, fake_rasa: FakeRasa, mutate: Callable[..., Any], status: int, code: str | None
) -> None:
    callback = callbacks().text(BOUND_USER, "你好")
    query, body = mutate(callback.query, callback.body)
    response = await gateway.post("/wecom/callback", params=query, data=body)
    assert response.status == status
    if code is not None:
        assert (await response.json())["error"]["code"] == code
    await asyncio.sleep(0.1)
    assert fake_rasa.received == []


async def test_unconfigured_gateway_answers_503(start_gateway: Callable[..., Any], fake_rasa: FakeRasa) -> None:
    client: Client = await start_gateway(fake_rasa.url)
    response = await client.get("/wecom/callback", params={"msg_signature": "a", "timestamp": "1", "nonce": "1"})
    assert response.status == 503
