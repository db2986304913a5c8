"""Cards, credit-card bills and repayments, loans, deposits, branches, rates, customer care, identities."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from bankcore import (
    accounts,
    branches,
    cards,
    credit_cards,
    customer_care,
    customers,
    deposits,
    history,
    loans,
    rates,
    sandbox,
)
from bankcore.database import unit_of_work
from bankcore.errors import BankError, CardError, NotFoundError, RepaymentRejected, UnknownCurrencyError
from bankcore.models import Account, Handoff, Journal
from tests.core.support import assert_ledger_consistent

# ---------------------------------------------------------------- cards


def test_report_lost_freezes_at_once_and_is_idempotent(bank, now):
    with unit_of_work(bank) as session:
        card = cards.report_lost(session, "C001", "3821", now)
        assert card.status == "lost"
        assert cards.report_lost(session, "C001", "3821", now).status == "lost"
        assert "3821" in sandbox.outbox(session, "C001")[0].text


def test_report_lost_needs_the_card_when_there_are_several(bank, now):
    with pytest.raises(CardError) as caught, unit_of_work(bank) as session:
        cards.report_lost(session, "C001", None, now)
    assert caught.value.code == "card_ambiguous" and set(caught.value.details["candidates"]) == {"3821", "5512"}
    with unit_of_work(bank) as session:
        assert cards.report_lost(session, "C003", None, now).last4 == "7730"


def test_unknown_card(bank, now):
    for operation in (cards.report_lost, cards.activate, cards.request_replacement):
        with pytest.raises(NotFoundError) as caught, unit_of_work(bank) as session:
            operation(session, "C001", "0000", now)
        assert caught.value.code == "card_not_found"
    with pytest.raises(NotFoundError), unit_of_work(bank) as session:
        cards.report_lost(session, "C001", "6602", now)  # 李娜's card


def test_replacement_issues_an_inactive_card_that_can_be_activated(bank, now):
    with unit_of_work(bank) as session:
        cards.report_lost(session, "C001", "3821", now)
        new = cards.request_replacement(session, "C001", "3821", now)
    assert new.status == "inactive" and new.last4 != "3821" and new.account_id == "A1001"
    assert new.expiry > now.date() + dt.timedelta(days=4 * 365)
    with unit_of_work(bank) as session:
        statuses = {c.last4: c.status for c in cards.list_cards(session, "C001", status=None)}
        assert "3821" not in statuses  # replaced cards are no longer listed
        assert cards.list_cards(session, "C001", status="replaced")[0].last4 == "3821"
        with pytest.raises(CardError) as caught:
            cards.request_replacement(session, "C001", "3821", now)
        assert caught.value.code == "card_already_replaced"
        assert cards.activate(session, "C001", new.last4, now).status == "active"


def test_activate(bank, now):
    with unit_of_work(bank) as session:
        assert cards.activate(session, "C004", "9063", now).status == "active"
    with pytest.raises(CardError) as caught, unit_of_work(bank) as session:
        cards.activate(session, "C004", "9063", now)
    assert caught.value.code == "card_already_active"
    with pytest.raises(CardError) as caught, unit_of_work(bank) as session:
        cards.activate(session, "C004", "1188", now)  # frozen
    assert caught.value.code == "card_not_activatable"
    with pytest.raises(NotFoundError) as not_found, unit_of_work(bank) as session:
        cards.activate(session, "C004", "1234", now)
    assert not_found.value.code == "card_not_found"


def test_activate_without_digits_picks_the_only_inactive_card(bank, now):
    with unit_of_work(bank) as session:
        assert cards.activate(session, "C004", None, now).last4 == "9063"


# ---------------------------------------------------------------- credit cards


def test_statement(bank):
    with unit_of_work(bank) as session:
        bill = credit_cards.statement(session, "C001")
        assert bill.card_last4 == "5512"
        assert (bill.statement_balance, bill.minimum_payment) == (Decimal("6320.00"), Decimal("632.00"))
        assert bill.current_balance == Decimal("8652.30")
        assert bill.available_credit == Decimal("41347.70")
        assert credit_cards.statement(session, "C001", "5512") == bill
        with pytest.raises(NotFoundError):
            credit_cards.statement(session, "C003")


@pytest.mark.parametrize(
    ("mode", "amount", "expected"),
    [("full", None, "6320.00"), ("minimum", None, "632.00"), ("amount", "1000", "1000.00")],
)
def test_repayment_modes(bank, now, mode, amount, expected):
    with unit_of_work(bank) as session:
        prepared = credit_cards.prepare_repayment(session, "C001", mode=mode, amount=amount, channel="webchat", now=now)
    assert prepared.amount == Decimal(expected) and prepared.status == "pending_confirmation"
    with unit_of_work(bank) as session:
        done = credit_cards.execute_repayment(session, "C001", prepared.id, now)
        again = credit_cards.execute_repayment(session, "C001", prepared.id, now)
    assert done.status == "completed" and again == done
    with unit_of_work(bank) as session:
        bill = credit_cards.statement(session, "C001")
        assert bill.current_balance == Decimal("8652.30") - Decimal(expected)
        assert bill.statement_balance == Decimal("6320.00") - Decimal(expected)
        assert session.get(Account, "A1001").balance == Decimal("52380.50") - Decimal(expected)  # type: ignore
        assert session.scalar(select(func.count()).select_from(Journal).where(Journal.kind == "card_repayment")) == 1
        assert_ledger_consistent(session)


def test_repayment_rejections(bank, now):
    cases = [
        ("C001", {"mode": "amount", "amount": "9000"}, "repayment_exceeds_balance"),
        ("C001", {"mode": "amount", "amount": "-1"}, "invalid_amount"),
        ("C001", {"mode": "weekly"}, "invalid_repayment_mode"),
        ("C004", {"mode": "full"}, "nothing_to_repay"),
        ("C003", {"mode": "full"}, "card_not_found"),
    ]
    for customer, arguments, code in cases:
        with pytest.raises(BankError) as caught, unit_of_work(bank) as session:
            credit_cards.prepare_repayment(session, customer, channel="webchat", now=now, **arguments)
        assert caught.value.code == code, arguments


def test_repayment_fails_at_execution_when_the_money_went_elsewhere(bank, now):
    with unit_of_work(bank) as session:
        prepared = credit_cards.prepare_repayment(session, "C002", mode="full", channel="webchat", now=now)
        session.get(Account, "A2001").status = "frozen"  # type: ignore[union-attr]
    with unit_of_work(bank) as session:
        result = credit_cards.execute_repayment(session, "C002", prepared.id, now)
    assert (result.status, result.failure_reason) == ("failed", "account_frozen")


def test_the_same_repayment_executed_concurrently_moves_money_once(bank, now):
    with unit_of_work(bank) as session:
        prepared = credit_cards.prepare_repayment(session, "C001", mode="minimum", channel="webchat", now=now)
    results, errors = [], []

    def run() -> None:
        try:
            with unit_of_work(bank) as session:
                results.append(credit_cards.execute_repayment(session, "C001", prepared.id, now))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors and len({r.journal_id for r in results}) == 1
    with unit_of_work(bank) as session:
        assert session.get(Account, "A1001").balance == Decimal("51748.50")  # type: ignore[union-attr]
        assert_ledger_consistent(session)


# ---------------------------------------------------------------- loans and deposits


def test_loan_next_instalment_and_repayment_at_most_once(bank, now):
    with unit_of_work(bank) as session:
        loan = loans.get_loan(session, "C001")
        assert loan.next_seq == 66 and loan.next_amount == Decimal("5621.43")
        assert loan.next_due_date == now.date() + dt.timedelta(days=9)
        first = loans.repay_instalment(session, "C001", loan.id, idempotency_key="k1", now=now)
        again = loans.repay_instalment(session, "C001", loan.id, idempotency_key="k1", now=now)
    assert first.status == "completed" and again == first and first.instalment_seq == 66
    with unit_of_work(bank) as session:
        after = loans.get_loan(session, "C001")
        assert after.next_seq == 67 and after.outstanding == Decimal("986420.35") - Decimal("2456.10")
        assert session.get(Account, "A1001").balance == Decimal("52380.50") - Decimal("5621.43")  # type: ignore
        assert_ledger_consistent(session)


def test_loan_repayment_without_funds_fails_and_keeps_the_instalment_due(bank, now):
    with unit_of_work(bank) as session:
        session.get(Account, "A4001").balance  # noqa: B018 - load before changing
        loan = loans.get_loan(session, "C004")
    with unit_of_work(bank) as session:
        from bankcore.ledger import Leg, lock_accounts, post

        locked = lock_accounts(session, ["A4001", "INT-CLEARING"])
        post(
            session,
            kind="test",
            description="drain",
            created_at=now,
            legs=[
                Leg(locked["A4001"], Decimal("-23015.60"), "drain"),
                Leg(locked["INT-CLEARING"], Decimal("23015.60"), "x"),
            ],
        )
    with unit_of_work(bank) as session:
        result = loans.repay_instalment(session, "C004", loan.id, idempotency_key="k2", now=now)
        assert (result.status, result.failure_reason) == ("failed", "insufficient_funds")
        assert loans.get_loan(session, "C004").next_seq == loan.next_seq


def test_loan_not_found(bank, now):
    with pytest.raises(NotFoundError), unit_of_work(bank) as session:
        loans.repay_instalment(session, "C003", None, idempotency_key="k3", now=now)
    with unit_of_work(bank) as session:
        assert loans.list_loans(session, "C003") == []


def test_no_instalment_due(bank, now):
    with unit_of_work(bank) as session:
        for n in range(3):
            loans.repay_instalment(session, "C001", "L1001", idempotency_key=f"all-{n}", now=now)
        with pytest.raises(RepaymentRejected) as caught:
            loans.repay_instalment(session, "C001", "L1001", idempotency_key="one-more", now=now)
    assert caught.value.code == "no_instalment_due"


def test_deposits(bank, now):
    with unit_of_work(bank) as session:
        listed = deposits.list_deposits(session, "C001")
    assert [d.id for d in listed] == ["D1001", "D1002"]
    first = listed[0]
    assert first.days_to_maturity(now.date()) == 18 and first.auto_renew is False
    assert first.rate == Decimal("1.3500") and first.expected_interest == Decimal("1350.00")


# ---------------------------------------------------------------- branches and rates


@pytest.mark.parametrize(
    ("location", "expected_district", "city"),
    [
        ("北京朝阳", "朝阳区", "北京"),
        ("朝阳区", "朝阳区", "北京"),
        ("北京市海淀区", "海淀区", "北京"),
        ("上海", None, "上海"),
        ("浦东", "浦东新区", "上海"),
        ("深圳福田", "福田区", "深圳"),
        ("广州天河区附近", "天河区", "广州"),
        ("中关村", "海淀区", "北京"),
    ],
)
def test_find_branches(bank, location, expected_district, city):
    with unit_of_work(bank) as session:
        found = branches.find_branches(session, location)
    assert found and all(b.city == city for b in found)
    if expected_district:
        assert found[0].district == expected_district
    assert found[0].address and found[0].hours and found[0].phone


def test_find_branches_with_no_match_or_no_location(bank):
    with unit_of_work(bank) as session:
        assert branches.find_branches(session, "拉萨") == []
        assert len(branches.find_branches(session, None, limit=2)) == 2
        assert [b.district for b in branches.find_branches(session, "北京朝阳", limit=5)][:2] == ["朝阳区", "朝阳区"]


def test_interest_rates(bank):
    with unit_of_work(bank) as session:
        one_year = rates.interest_rates(session, "deposit_fixed", term_months=12)
        assert len(one_year) == 1 and one_year[0].rate == Decimal("0.9500")
        assert {r.product for r in rates.interest_rates(session, "loan")} == {
            "loan_consumer",
            "loan_mortgage",
            "loan_business",
        }
        assert rates.interest_rates(session, "定期") == rates.interest_rates(session, "deposit_fixed")
        assert rates.interest_rates(session, "房贷")[0].product == "loan_mortgage"
        assert len(rates.interest_rates(session)) == 14


@pytest.mark.parametrize("currency", ["USD", "usd", "美元", "美金"])
def test_exchange_rate_by_code_or_name(bank, currency):
    with unit_of_work(bank) as session:
        rate = rates.exchange_rate(session, currency)
    assert (rate.currency, rate.unit) == ("USD", 100) and rate.buy < rate.sell
    assert rate.as_of.tzinfo is not None


def test_all_required_currencies_and_unknown_one(bank):
    with unit_of_work(bank) as session:
        codes = {r.currency for r in rates.list_exchange_rates(session)}
        assert codes == {"USD", "EUR", "JPY", "HKD", "GBP", "AUD", "CAD", "SGD", "KRW"}
        with pytest.raises(UnknownCurrencyError) as caught:
            rates.exchange_rate(session, "XYZ")
    assert caught.value.code == "unknown_currency"


# ---------------------------------------------------------------- customer care


def test_handoff_complaint_and_opt_out(bank, now):
    with unit_of_work(bank) as session:
        handoff = customer_care.request_handoff(
            session, "C002", reason="customer_asked", channel="webchat", summary="想咨询房贷提前还款", now=now
        )
        assert (handoff.priority, handoff.status) == ("normal", "open")
        complaint = customer_care.record_complaint(session, "C002", text="网点排队太久", channel="webchat", now=now)
        assert complaint.reference.startswith("TS")
        customer_care.record_opt_out(session, "C002", topic="marketing", channel="sms", now=now)
        customer_care.record_opt_out(session, "C002", topic="marketing", channel="sms", now=now)
        assert len(customer_care.opt_outs(session, "C002")) == 1
        assert customer_care.is_opted_out(session, "C002", topic="marketing", channel="sms")
        assert not customer_care.is_opted_out(session, "C002", topic="reminders", channel="sms")
        customer_care.record_opt_out(session, "C002", topic="all", channel="ivr", now=now)
        assert customer_care.is_opted_out(session, "C002", topic="reminders", channel="ivr")
        with pytest.raises(BankError):
            customer_care.request_handoff(session, "C002", reason="x", channel="webchat", priority="urgent", now=now)


def test_fraud_report_freezes_all_active_cards_and_escalates(bank, now):
    with unit_of_work(bank) as session:
        report = customer_care.report_fraud(session, "C001", channel="ivr", description="收到陌生扣款短信", now=now)
        assert set(report.frozen_cards) == {"3821", "5512"}
        handoff = session.get(Handoff, report.handoff_id)
        assert handoff is not None and handoff.priority == "high" and handoff.reason == "fraud"
        assert {c.status for c in cards.list_cards(session, "C001")} == {"frozen"}
        assert customer_care.open_handoffs(session)[0].priority == "high"


def test_fraud_report_for_one_card(bank, now):
    with unit_of_work(bank) as session:
        report = customer_care.report_fraud(session, "C001", channel="webchat", last4="5512", now=now)
        assert report.frozen_cards == ("5512",)
        assert {c.last4: c.status for c in cards.list_cards(session, "C001")} == {"3821": "active", "5512": "frozen"}


# ---------------------------------------------------------------- customers, accounts, history


def test_identities(bank):
    with unit_of_work(bank) as session:
        assert customers.resolve_identity(session, "wecom", "lina") == "C002"
        assert customers.resolve_identity(session, "wecom", "nobody") is None
        customers.link_identity(session, "webchat", "browser-1", "C003")
        customers.link_identity(session, "webchat", "browser-1", "C004")
        assert customers.resolve_identity(session, "webchat", "browser-1") == "C004"
        with pytest.raises(NotFoundError):
            customers.link_identity(session, "webchat", "browser-2", "C999")
        assert [c.id for c in customers.list_customers(session)] == ["C001", "C002", "C003", "C004"]


def test_accounts(bank):
    with unit_of_work(bank) as session:
        listed = accounts.list_accounts(session, "C001")
        assert [a.kind for a in listed] == ["debit", "credit"]
        assert accounts.list_accounts(session, "C001", kind="credit")[0].owed == Decimal("8652.30")
        assert accounts.find_account(session, "C001", last4="5512").kind == "credit"  # type: ignore[union-attr]
        assert accounts.find_account(session, "C001", last4="0000") is None
        with pytest.raises(NotFoundError):
            accounts.get_account(session, "C001", "A2001")
        with pytest.raises(NotFoundError):
            accounts.get_account(session, "C001", "INT-CLEARING")


def test_history_newest_first_with_bounds(bank, now):
    with unit_of_work(bank) as session:
        latest = history.recent_entries(session, "C001", limit=3)
        assert len(latest) == 3 and latest[0].created_at >= latest[1].created_at >= latest[2].created_at
        window = history.recent_entries(
            session, "C001", account_id="A1001", limit=50, since=now - dt.timedelta(days=7), until=now
        )
        assert window and all(now - dt.timedelta(days=7) <= e.created_at < now for e in window)
        assert all(e.account_id == "A1001" for e in window)
        assert history.recent_entries(session, "C002", account_id="A1001") == []
