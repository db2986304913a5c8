"""A reminder opens a conversation (as the scheduler sends it) and the customer acts on it, declines or opts out."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from bankcore.database import unit_of_work
from bankcore.models import CrossChannelEvent, OptOut
from channels.rasa_client import BotMessage, RasaClient
from channels.reminder_conversations import open_reminder_conversation

pytestmark = pytest.mark.rasa


def send_reminder(stack, customer_id: str, channel: str, **entities: str) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """What the scheduler's conversation sender does (channels.reminder_conversations), against the live Rasa."""

    async def run() -> list[BotMessage]:
        async with aiohttp.ClientSession() as http:
            return await open_reminder_conversation(
                RasaClient(http, stack.rasa_url, stack.rasa_token),
                customer_id=customer_id,
                channel=channel,
                kind=entities["reminder_kind"],
                topic=entities["reminder_topic"],
                key=entities["reminder_key"],
                item_id=entities["reminder_item"],
                payload={"amount": entities.get("reminder_amount"), "due_date": entities.get("reminder_due")},
            )

    replies = asyncio.run(run())
    return [{"text": r.text, "buttons": [{"title": b.title, "payload": b.payload} for b in r.buttons]} for r in replies]


def loan_reminder(key: str) -> dict[str, str]:
    return {
        "reminder_kind": "loan_instalment_due",
        "reminder_topic": "loan",
        "reminder_key": key,
        "reminder_item": "L4001",
        "reminder_amount": "3200.00",
        "reminder_due": "2026-11-26",
    }


def outcomes(stack, customer_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    with unit_of_work(stack.db_session_factory) as session:
        rows = session.scalars(
            select(CrossChannelEvent).where(
                CrossChannelEvent.customer_id == customer_id, CrossChannelEvent.type == "reminder_outcome"
            )
        ).all()
        return [str(row.attrs.get("outcome")) for row in rows]


def test_a_loan_reminder_is_read_with_its_amount_and_offers_to_repay(live_stack, chat) -> None:  # type: ignore[no-untyped-def]
    customer = chat("C004")
    replies = send_reminder(live_stack, "C004", "webchat", **loan_reminder("C004:loan-t3:L4001:2026-11-26:T-3"))
    text = " ".join(str(r.get("text")) for r in replies)
    assert "个人消费贷款" in text and "3,200.00" in text and "11月26日" in text, text
    payloads = [b["payload"] for r in replies for b in r.get("buttons") or []]
    assert "/loan_repayment" in payloads
    # The customer's answer continues the same conversation: the repayment skill starts.
    assert "贷款" in customer.say("/loan_repayment")


def test_declining_a_reminder_is_recorded_as_its_outcome(live_stack, chat) -> None:  # type: ignore[no-untyped-def]
    customer = chat("C004")
    send_reminder(live_stack, "C004", "webchat", **loan_reminder("C004:loan-t1:L4001:2026-11-26:T-1"))
    assert "稍后" in customer.say("/deny")
    assert "declined" in outcomes(live_stack, "C004")


def test_stop_reminding_me_in_a_reminder_conversation_opts_out_of_that_kind_everywhere(live_stack, chat) -> None:  # type: ignore[no-untyped-def]
    customer = chat("C001")
    key = "C001:loan-t3:L1001:2026-12-01:T-3"
    send_reminder(live_stack, "C001", "webchat", **{**loan_reminder(key), "reminder_item": "L1001"})
    reply = customer.say("以后别再给我打电话提醒了")
    assert "贷款还款提醒" in reply, reply
    with unit_of_work(live_stack.db_session_factory) as session:
        rows = session.scalars(select(OptOut).where(OptOut.customer_id == "C001")).all()
        assert any(row.topic == "loan" and row.channel == "all" for row in rows), [(r.topic, r.channel) for r in rows]
    assert "opted_out" in outcomes(live_stack, "C001")


def test_a_promise_to_pay_in_a_reminder_conversation_is_acknowledged_with_its_day_and_recorded_once(  # type: ignore[no-untyped-def]
    live_stack, chat
) -> None:
    customer = chat("C002")
    before = outcomes(live_stack, "C002").count("promised")
    send_reminder(live_stack, "C002", "webchat", **loan_reminder("C002:loan-t3:L4001:2026-12-09:T-3"))
    reply = customer.say("我明天就还")
    assert "明天" in reply and "记下" in reply, reply
    assert outcomes(live_stack, "C002").count("promised") == before + 1
    # Said again about the same reminder: acknowledged again, recorded once.
    reply = customer.say("周五之前还上")
    assert "周五之前" in reply, reply
    assert outcomes(live_stack, "C002").count("promised") == before + 1


def test_a_promise_without_a_date_is_acknowledged_without_one(live_stack, chat) -> None:  # type: ignore[no-untyped-def]
    customer = chat("C002")
    send_reminder(live_stack, "C002", "webchat", **loan_reminder("C002:loan-t1:L4001:2026-12-09:T-1"))
    reply = customer.say("好的我会按时还的")
    assert "按时还款" in reply, reply


def test_a_promise_to_pay_outside_a_reminder_conversation_gets_a_reply_and_records_nothing(  # type: ignore[no-untyped-def]
    live_stack, chat
) -> None:
    customer = chat("C003")
    before = outcomes(live_stack, "C003").count("promised")
    reply = customer.say("过两天发工资了就还")
    assert "还款" in reply, reply
    assert outcomes(live_stack, "C003").count("promised") == before
