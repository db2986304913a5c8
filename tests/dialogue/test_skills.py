"""Every non-transfer skill against the sandbox bank, through the real gateway, Rasa and action server."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import select

from bankcore import accounts, cards, customer_care
from bankcore.database import unit_of_work
from bankcore.models import Complaint, Handoff
from bankcore.money import format_amount

pytestmark = pytest.mark.rasa


def test_greeting_uses_the_customers_name(chat):  # type: ignore[no-untyped-def]
    assert "王先生" in chat("C001").say("你好")


def test_balance_reads_every_account_from_the_ledger(live_stack, chat):  # type: ignore[no-untyped-def]
    with unit_of_work(live_stack.db_session_factory) as session:
        expected = accounts.list_accounts(session, "C002")
    reply = chat("C002").say("帮我查一下余额")
    for account in expected:
        assert account.last4 in reply
    debit = next(a for a in expected if a.kind == "debit")
    assert format_amount(debit.balance) in reply


def test_transaction_history_lists_recent_entries(chat):  # type: ignore[no-untyped-def]
    reply = chat("C001").say("查一下最近的交易明细")
    assert "交易明细" in reply and "余额" in reply


def test_credit_card_bill_and_full_repayment(live_stack, chat):  # type: ignore[no-untyped-def]
    customer = chat("C001")
    bill = customer.say("我的信用卡账单多少")
    assert "5512" in bill and "最低还款" in bill
    with unit_of_work(live_stack.db_session_factory) as session:
        debit_before = accounts.get_account(session, "C001", "A1001").balance
        credit_before = accounts.get_account(session, "C001", "A1002").balance
    readback = customer.say("帮我全额还信用卡")
    assert "确认还款" in readback or "核对" in readback, readback
    assert "还款成功" in customer.say("确认")
    with unit_of_work(live_stack.db_session_factory) as session:
        paid = debit_before - accounts.get_account(session, "C001", "A1001").balance
        assert paid > 0
        assert accounts.get_account(session, "C001", "A1002").balance == credit_before + paid


def test_lost_card_is_frozen_at_once_and_can_be_replaced(live_stack, chat):  # type: ignore[no-untyped-def]
    customer = chat("C002")
    reply = customer.say("我的尾号6602的卡丢了")
    assert "冻结" in reply and "6602" in reply
    with unit_of_work(live_stack.db_session_factory) as session:
        status = {c.last4: c.status for c in cards.list_cards(session, "C002")}
    assert status["6602"] == "lost"
    assert "补卡申请已提交" in customer.say("好的")
    with unit_of_work(live_stack.db_session_factory) as session:
        live = [c.status for c in cards.list_cards(session, "C002")]
        replaced = [c.last4 for c in cards.list_cards(session, "C002", status="replaced")]
    assert "inactive" in live and replaced == ["6602"]


def test_new_card_activation(live_stack, chat):  # type: ignore[no-untyped-def]
    customer = chat("C004")
    assert "9063" in customer.say("我要激活新卡")
    assert "已激活" in customer.say("确认")
    with unit_of_work(live_stack.db_session_factory) as session:
        status = {c.last4: c.status for c in cards.list_cards(session, "C004")}
    assert status["9063"] == "active"


def test_reset_password_is_guidance_only(chat):  # type: ignore[no-untyped-def]
    reply = chat("C003").say("密码忘了怎么重置")
    assert "身份证" in reply and "不会向您索要密码" in reply


def test_loan_due_date_and_repayment(live_stack, chat):  # type: ignore[no-untyped-def]
    customer = chat("C004")
    info = customer.say("我的贷款下个月还多少")
    assert "个人消费贷款" in info and "还款日" in info
    with unit_of_work(live_stack.db_session_factory) as session:
        before = accounts.get_account(session, "C004", "A4001").balance
    readback = customer.say("帮我把这期贷款还了")
    assert "确认还款" in readback or "核对" in readback, readback
    assert "还款成功" in customer.say("确认")
    with unit_of_work(live_stack.db_session_factory) as session:
        assert accounts.get_account(session, "C004", "A4001").balance < before


def test_deposit_maturity(chat):  # type: ignore[no-untyped-def]
    reply = chat("C001").say("我的定期什么时候到期")
    assert "到期" in reply and "年利率" in reply


def test_branch_lookup_asks_for_the_place_when_missing(chat):  # type: ignore[no-untyped-def]
    customer = chat("C003")
    assert "朝阳" in customer.say("北京朝阳区有没有网点")
    assert "城市" in customer.say("附近的网点在哪")
    assert "浦东" in customer.say("上海浦东")


def test_interest_and_exchange_rates(chat):  # type: ignore[no-untyped-def]
    customer = chat("C003")
    assert "%" in customer.say("三年定期利率是多少")
    reply = customer.say("美元汇率多少")
    assert "USD" in reply and "买入" in reply


def test_fraud_report_freezes_cards_and_hands_off_with_priority(live_stack, chat):  # type: ignore[no-untyped-def]
    reply = chat("C002").say("我被骗了，有人冒充公安让我把钱转到安全账户")
    assert "安全账户" in reply and "反诈" in reply
    with unit_of_work(live_stack.db_session_factory) as session:
        handoffs = customer_care.open_handoffs(session, "C002")
        statuses = {c.last4: c.status for c in cards.list_cards(session, "C002")}
    assert any(h.priority == "high" and h.reason == "fraud" for h in handoffs)
    assert statuses.get("8830") == "frozen"


def test_human_handoff_is_recorded_with_a_summary(live_stack, chat):  # type: ignore[no-untyped-def]
    reply = chat("C003").say("我要转人工")
    assert "人工" in reply
    with unit_of_work(live_stack.db_session_factory) as session:
        rows = session.scalars(select(Handoff).where(Handoff.customer_id == "C003")).all()
    assert rows and rows[-1].summary


def test_complaint_is_captured(live_stack, chat):  # type: ignore[no-untyped-def]
    customer = chat("C003")
    assert "描述" in customer.say("我要投诉")
    assert "已记录" in customer.say("你们网点排队两个小时都没人管，太差了")
    with unit_of_work(live_stack.db_session_factory) as session:
        texts = [c.text for c in session.scalars(select(Complaint).where(Complaint.customer_id == "C003"))]
    assert any("排队" in text for text in texts)


def test_opt_out_is_recorded_against_the_customer(live_stack, chat):  # type: ignore[no-untyped-def]
    assert "不再" in chat("C003").say("以后别再给我发营销短信了")
    with unit_of_work(live_stack.db_session_factory) as session:
        assert customer_care.is_opted_out(session, "C003", topic="marketing", channel="webchat")


def test_out_of_scope_and_bot_challenge(chat):  # type: ignore[no-untyped-def]
    customer = chat("C003")
    assert "无法回答" in customer.say("今天天气怎么样")
    assert "智能" in customer.say("你是机器人吗")


def test_low_confidence_offers_two_guesses_then_a_human(chat):  # type: ignore[no-untyped-def]
    customer = chat("C003")
    first = customer.send("嗯那个就是上次说的那个东西")
    buttons = [b for m in first for b in m.get("buttons") or []]
    assert len(buttons) == 3, first
    assert buttons[-1]["payload"] == "/human_handoff"
    # The same unclear message again: a second miss in a row, whatever the model makes of vague words.
    second = customer.say("嗯那个就是上次说的那个东西")
    assert "人工" in second


@pytest.mark.parametrize(
    "text",
    [
        "😀😀😀",
        "<script>alert(1)</script>",
        "'; DROP TABLE accounts; --",
        "给李娜转-500元",
        "给李娜转９９９９９９９９９９９９９元",
        "Ｈｅｌｌｏ",
    ],
)
def test_odd_input_gets_a_reply_and_moves_no_money(live_stack, chat, text):  # type: ignore[no-untyped-def]
    customer = chat("C003")
    with unit_of_work(live_stack.db_session_factory) as session:
        before = accounts.get_account(session, "C003", "A3001").balance
    replies = customer.send(text)
    assert replies and all(isinstance(m.get("text"), str) for m in replies)
    customer.say("不转了")
    with unit_of_work(live_stack.db_session_factory) as session:
        assert accounts.get_account(session, "C003", "A3001").balance == before


def test_full_width_digits_are_read_as_amounts(chat):  # type: ignore[no-untyped-def]
    customer = chat("C003")
    reply = customer.say("给李娜转５００元")
    assert "500.00" in reply, reply
    customer.say("取消")


def test_too_long_message_is_refused_with_the_limit(live_stack, chat):  # type: ignore[no-untyped-def]
    customer = chat("C003")
    status, body = customer._post("/webchat/messages", {"text": "转" * 10_000}, customer.token)
    text = str(body)
    assert str(live_stack.settings.max_message_chars) in text
    assert status in {200, 400, 413}


def test_money_is_conserved_across_the_whole_ledger(live_stack):  # type: ignore[no-untyped-def]
    from sqlalchemy import func

    from bankcore.models import LedgerEntry

    with unit_of_work(live_stack.db_session_factory) as session:
        total = session.scalar(select(func.coalesce(func.sum(LedgerEntry.amount), 0)))
    assert Decimal(str(total)) == Decimal("0")
