"""Reminders delivered on WeChat Work (queued in the gateway's outbox) and as mini-program subscribe messages."""

from __future__ import annotations

import datetime as dt

import aiohttp
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bankcore import subscriptions
from bankcore.database import unit_of_work
from bankcore.models import ChannelOutboxMessage
from bankcore.reminders.store import ClaimedReminder
from channels.miniprogram.api import WeChatApi
from channels.rasa_client import BotMessage, Button
from channels.scheduler.platform_deliverers import miniprogram_deliverer, wecom_deliverer
from tests.channels.wecom_support import APP_ID, APP_SECRET, TEMPLATE_ID, WeChatPlatform

NOW = dt.datetime(2026, 12, 2, 10, 0, tzinfo=dt.UTC)
OPENID = "oDemo-C001-wangwei"


def reminder(key: str = "C001:card:A1:2026-12-05:T-3", customer_id: str = "C001") -> ClaimedReminder:
    return ClaimedReminder(
        id=1,
        key=key,
        customer_id=customer_id,
        rule_id="card_statement_due",
        kind="card_statement_due",
        topic="credit_card",
        item_id="A1",
        due_date=dt.date(2026, 12, 5),
        send_after=NOW,
        channels=("wecom", "miniprogram", "phone"),
        payload={"amount": "3,280.00"},
        attempt_no=1,
        worker="w1",
        claimed_at=NOW,
        lease_until=NOW + dt.timedelta(minutes=5),
    )


REPLIES = [
    BotMessage(text="【信用卡还款提醒】王先生您好……"),
    BotMessage(text="需要现在还款吗？", buttons=(Button("现在还款", "/credit_card_repay"), Button("稍后", "/deny"))),
]


async def test_a_wecom_reminder_is_queued_once_under_its_key(session_factory: sessionmaker[Session]) -> None:
    deliver = wecom_deliverer(session_factory, "1000002", clock=lambda: NOW)
    first = await deliver(reminder(), REPLIES, "C001:card:A1:2026-12-05:T-3")
    again = await deliver(reminder(), REPLIES, "C001:card:A1:2026-12-05:T-3")  # a worker crashed and re-sent
    assert first.ok and again.ok and again.detail == "already queued"
    with unit_of_work(session_factory) as session:
        rows = session.scalars(select(ChannelOutboxMessage).order_by(ChannelOutboxMessage.id)).all()
        assert [row.body["msgtype"] for row in rows] == ["text", "text", "template_card"]
        assert {row.external_user for row in rows} == {"wangwei"}
        keys = [b["key"] for b in rows[2].body["template_card"]["button_list"]]
        assert keys == ["/credit_card_repay", "/deny"]
    nobody = await deliver(reminder(customer_id="C004"), REPLIES, "C004:x")
    assert not nobody.ok and nobody.retryable


async def test_a_subscribe_message_uses_one_consent_and_43101_removes_it(
    session_factory: sessionmaker[Session], wechat_platform: WeChatPlatform
) -> None:
    sim = wechat_platform.simulator
    with unit_of_work(session_factory) as session:
        subscriptions.record(
            session, openid=OPENID, customer_id="C001", template_id=TEMPLATE_ID, accepted=True, now=NOW
        )
        subscriptions.record(
            session, openid=OPENID, customer_id="C001", template_id=TEMPLATE_ID, accepted=True, now=NOW
        )
    sim.grant_subscription(OPENID, TEMPLATE_ID, 1)  # WeChat knows of one acceptance only
    async with aiohttp.ClientSession() as http:
        api = WeChatApi(http, wechat_platform.url, APP_ID, APP_SECRET)
        deliver = miniprogram_deliverer(session_factory, api, TEMPLATE_ID, clock=lambda: NOW)
        sent = await deliver(reminder(), REPLIES, "k1")
        assert sent.ok
        message = sim.subscribe_sent[-1]
        assert message["body"]["touser"] == OPENID
        assert message["body"]["data"]["thing1"]["value"] == "信用卡还款提醒"
        assert message["body"]["data"]["amount3"]["value"] == "3,280.00元"
        assert message["body"]["page"].startswith("pages/chat/chat?reminder=")
        refused = await deliver(reminder(), REPLIES, "k2")  # our count says 1 left, WeChat says 43101
        assert not refused.ok and refused.retryable and "43101" in refused.detail
        with unit_of_work(session_factory) as session:
            assert subscriptions.remaining(session, openid=OPENID, template_id=TEMPLATE_ID) == 0
        none_left = await deliver(reminder(), REPLIES, "k3")
        assert not none_left.ok and "consent" in none_left.detail
        assert len(sim.subscribe_sent) == 1
