"""Answer before asked, end to end: the opening names the predicted need; yes goes into it, no is understood."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bankcore.database import unit_of_work
from bankcore.models import ContactRecord
from bankcore.sandbox import load_sandbox

pytestmark = pytest.mark.rasa


def _text(messages: list[dict]) -> str:  # type: ignore[type-arg]
    return "\n".join(str(m.get("text") or "") for m in messages)


def _payloads(messages: list[dict]) -> list[str]:  # type: ignore[type-arg]
    return [str(b.get("payload")) for m in messages for b in m.get("buttons") or []]


def _live_contacts(live_stack, conversation_id: str) -> list[ContactRecord]:  # type: ignore[no-untyped-def]
    with unit_of_work(live_stack.db_session_factory) as session:
        rows = session.scalars(
            select(ContactRecord)
            .where(ContactRecord.conversation_id == conversation_id, ContactRecord.source == "live")
            .order_by(ContactRecord.id)
        ).all()
        session.expunge_all()
        return list(rows)


def test_the_opening_names_the_predicted_need_and_yes_goes_straight_into_it(live_stack, chat):  # type: ignore[no-untyped-def]
    # C004's loan instalment is due in a few days: the sandbox's core facts are events of the shared database.
    customer = chat("C004")
    opening = customer.open()
    assert "陈女士您好，请问是要了解贷款还款吗" in _text(opening)
    assert {"/affirm", "/deny"} <= set(_payloads(opening))
    answer = customer.say("/affirm")
    assert "下期还款日" in answer
    contact = _live_contacts(live_stack, "webchat:C004")[-1]
    assert contact.predicted_intent == "loan_repayment" and contact.predicted_p is not None
    assert contact.intent == "loan_repayment"
    assert contact.channel == "app"


def test_no_to_the_guess_is_understood_normally(chat):  # type: ignore[no-untyped-def]
    customer = chat("C002")
    assert "请问是要查询信用卡账单吗" in _text(customer.open())
    assert "请问有什么可以帮您" in customer.say("不是")
    assert "6602" in customer.say("帮我查一下余额")


def test_asking_something_else_after_the_guess_is_understood_normally(chat):  # type: ignore[no-untyped-def]
    customer = chat("C004")
    assert "请问是要了解贷款还款吗" in _text(customer.open())
    reply = customer.say("帮我查一下余额")
    assert "1188" in reply and "下期还款日" not in reply
    # The guess lapsed: a later "确认" has nothing to confirm.
    assert "下期还款日" not in customer.say("确认")


def test_a_customer_the_model_knows_nothing_about_gets_a_plain_greeting(live_stack, chat):  # type: ignore[no-untyped-def]
    with unit_of_work(live_stack.db_session_factory) as session:
        load_sandbox(
            session,
            {
                "version": 1,
                "customers": [
                    {
                        "id": "C0NEW",
                        "name": "赵敏",
                        "surname": "赵",
                        "title": "女士",
                        "accounts": [{"id": "A9901", "kind": "debit", "name": "借记卡账户", "balance": "100.00"}],
                    }
                ],
            },
        )
    opening = chat("C0NEW").open()
    assert "赵女士您好，我是智能银行助手" in _text(opening)
    assert _payloads(opening) == []
    contact = _live_contacts(live_stack, "webchat:C0NEW")[-1]
    assert contact.predicted_intent is None and contact.intent is None
