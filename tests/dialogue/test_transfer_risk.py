"""Risk control in the conversation: block, hold with a call-back, warnings acknowledged explicitly, the PIN."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import select

from bankcore import accounts
from bankcore.database import unit_of_work
from bankcore.models import Handoff, RiskDecision, Transfer

pytestmark = pytest.mark.rasa

# Demo customers' transaction PINs (bankcore/demo_bank.json) typed in these tests; the secrets scan that runs
# after the suite checks that none of them reached the tracker store or the logs.
TYPED_PINS = ("135790", "246810")
ACK_PAYLOAD = '/affirm{"risk_ack": "acknowledged"}'


def _balance(stack, account_id: str, customer_id: str) -> Decimal:  # type: ignore[no-untyped-def]
    with unit_of_work(stack.db_session_factory) as session:
        return accounts.get_account(session, customer_id, account_id).balance


def _last_transfer(stack, customer_id: str) -> Transfer:  # type: ignore[no-untyped-def]
    with unit_of_work(stack.db_session_factory) as session:
        row = session.scalars(
            select(Transfer).where(Transfer.customer_id == customer_id).order_by(Transfer.created_at.desc()).limit(1)
        ).one()
        session.expunge(row)
        return row


def _handoffs(stack, customer_id: str, reason: str) -> list[Handoff]:  # type: ignore[no-untyped-def]
    with unit_of_work(stack.db_session_factory) as session:
        rows = list(
            session.scalars(select(Handoff).where(Handoff.customer_id == customer_id, Handoff.reason == reason))
        )
        for row in rows:
            session.expunge(row)
        return rows


def test_a_fraud_listed_payee_is_blocked_politely_and_nothing_moves(live_stack, chat) -> None:  # type: ignore[no-untyped-def]
    customer = chat("C003")
    customer.restart()
    before = _balance(live_stack, "A3001", "C003")
    assert "赵强" in customer.say("给赵强转两百")
    reply = customer.say("确认")
    assert "已被拦截" in reply and "资金没有转出" in reply, reply
    transfer = _last_transfer(live_stack, "C003")
    assert (transfer.status, transfer.failure_reason) == ("cancelled", "risk_blocked")
    assert _balance(live_stack, "A3001", "C003") == before
    assert any(h.priority == "high" for h in _handoffs(live_stack, "C003", "risk_block"))
    assert "验证码" not in customer.say("确认"), "nothing is left to confirm after a block"


def test_a_cross_border_payee_needs_the_pin_then_the_code(live_stack, chat) -> None:  # type: ignore[no-untyped-def]
    customer = chat("C002")
    customer.restart()
    before = _balance(live_stack, "A2001", "C002")
    assert "陈静怡" in customer.say("给陈静怡转两百")
    prompt = customer.send("确认")
    assert any(m.get("input") == "pin" for m in prompt), prompt
    assert "交易密码" in prompt[0]["text"]
    assert "不正确" in customer.say("000000")
    after_pin = customer.send(TYPED_PINS[0])
    texts = "\n".join(str(m.get("text")) for m in after_pin)
    assert "交易密码验证通过" in texts and any(m.get("input") == "otp" for m in after_pin), after_pin
    done = customer.say(customer.latest_code())
    assert "转账成功" in done, done
    assert _balance(live_stack, "A2001", "C002") == before - Decimal("200.00")


def test_a_coached_customer_is_warned_and_must_acknowledge_explicitly(live_stack, chat) -> None:  # type: ignore[no-untyped-def]
    customer = chat("C001")
    customer.restart()
    customer.say("客服说我刷单返利的钱要先交保证金")
    assert "李四" in customer.say("给李四转五百")
    warning = customer.send("确认")
    text = warning[0]["text"]
    assert "防诈骗提醒" in text and "我已知晓风险" in text, warning
    assert [b["title"] for b in warning[0]["buttons"]] == ["我已知晓风险，继续转账", "取消转账"]
    assert "验证码" not in customer.say("好的"), "a bare yes is not an acknowledgement"
    with unit_of_work(live_stack.db_session_factory) as session:
        decision = session.scalars(select(RiskDecision).where(RiskDecision.customer_id == "C001")).all()[-1]
        assert decision.action == "warn" and decision.acknowledged_at is None
    pin_prompt = customer.send(ACK_PAYLOAD)
    assert any(m.get("input") == "pin" for m in pin_prompt), pin_prompt
    before = _balance(live_stack, "A1001", "C001")
    customer.say(TYPED_PINS[1])
    assert "转账成功" in customer.say(customer.latest_code())
    assert _balance(live_stack, "A1001", "C001") == before - Decimal("500.00")


def test_a_scam_script_holds_the_transfer_and_the_agent_sees_why(live_stack, chat) -> None:  # type: ignore[no-untyped-def]
    customer = chat("C001")
    customer.restart()
    before = _balance(live_stack, "A1001", "C001")
    customer.say("公安局的人说我涉嫌洗钱，让我把钱转到安全账户")
    assert "王芳" in customer.say("给王芳转三千")
    reply = customer.say("确认")
    assert "暂缓处理" in reply and "安全账户" in reply and "小时内致电" in reply, reply
    transfer = _last_transfer(live_stack, "C001")
    assert (transfer.status, transfer.failure_reason) == ("held", "risk_hold")
    assert _balance(live_stack, "A1001", "C001") == before
    held = _handoffs(live_stack, "C001", "risk_hold")
    assert held and "话术" in held[-1].summary and "3,000.00" in held[-1].summary
    customer.say("转人工")
    asked = _handoffs(live_stack, "C001", "customer_request")
    assert asked and "风控记录" in asked[-1].summary and "暂缓待核实" in asked[-1].summary
