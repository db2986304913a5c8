"""The sandbox loader: the demo bank, idempotent reloads, balanced opening journals, clear format errors."""

from __future__ import annotations

import copy
import datetime as dt
import json
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from bankcore import accounts, cards, credit_cards, deposits, history, loans, sandbox, transfers
from bankcore.customers import get_customer, resolve_identity
from bankcore.database import unit_of_work
from bankcore.errors import SandboxFormatError
from bankcore.models import (
    Account,
    Base,
    Branch,
    Card,
    ExchangeRate,
    InterestRate,
    Journal,
    LedgerEntry,
    Payee,
    Transfer,
)
from tests.core.support import NOW, assert_ledger_consistent


def _counts(session) -> dict[str, int]:
    return {
        table.name: session.scalar(select(func.count()).select_from(table)) for table in Base.metadata.sorted_tables
    }


def test_demo_bank_has_what_the_skills_need(bank):
    with unit_of_work(bank) as session:
        wang = get_customer(session, "C001")
        assert (wang.name, wang.display_name, wang.timezone) == ("王伟", "王先生", "Asia/Shanghai")
        assert [c.display_name for c in map(lambda i: get_customer(session, i), ["C002", "C003", "C004"])] == [
            "李女士",
            "张先生",
            "陈女士",
        ]
        debit = accounts.find_account(session, "C001", kind="debit")
        assert debit is not None and debit.balance == Decimal("52380.50")
        bill = credit_cards.statement(session, "C001")
        assert bill.due_date is not None and 0 < (bill.due_date - NOW.date()).days <= 10
        assert bill.statement_balance > bill.minimum_payment > 0
        payees = {p.name: p for p in transfers.list_payees(session, "C001")}
        assert set(payees) == {"张三", "李四", "王芳", "刘洋"}
        assert payees["张三"].internal and payees["刘洋"].external_status == "closed"
        zhang = session.get(Payee, "P1001")
        assert zhang is not None
        assert session.get(Account, zhang.internal_account_id).customer_id == "C003"  # type: ignore[union-attr]
        failed = transfers.failed_transfers(session, "C001")
        assert failed[0].payee_name == "刘洋" and failed[0].failure_reason == "payee_account_closed"
        local = dt.timezone(dt.timedelta(hours=8))
        assert failed[0].created_at.astimezone(local).date() == NOW.astimezone(local).date() - dt.timedelta(days=1)
        loan = loans.list_loans(session, "C001")[0]
        assert loan.next_due_date is not None and loan.next_amount == Decimal("5621.43")
        soon = deposits.maturing_within(session, "C001", NOW.date(), 30)
        assert len(soon) == 1 and soon[0].amount == Decimal("100000.00")
        assert resolve_identity(session, "phone", "+8613801012345") == "C001"
        statuses = {c.last4: c.status for c in cards.list_cards(session, "C004")}
        assert statuses == {"1188": "frozen", "9063": "inactive"}
        assert len(history.recent_entries(session, "C001", limit=50)) > 5
        assert session.scalar(select(func.count()).select_from(Branch)) >= 8
        assert session.scalar(select(func.count()).select_from(ExchangeRate)) == 9
        assert session.scalar(select(func.count()).select_from(InterestRate)) > 5
        assert_ledger_consistent(session)


def test_loading_twice_changes_nothing(bank):
    with unit_of_work(bank) as session:
        before = _counts(session)
        balances = {a.id: a.balance for a in session.scalars(select(Account))}
    with unit_of_work(bank) as session:
        report = sandbox.load_sandbox(session, sandbox.demo_document(), now=NOW)
    assert report.created == {} and report.journals == 0
    with unit_of_work(bank) as session:
        assert _counts(session) == before
        assert {a.id: a.balance for a in session.scalars(select(Account))} == balances


def test_seed_demo_if_empty(session_factory):
    with unit_of_work(session_factory) as session:
        report = sandbox.seed_demo_if_empty(session, now=NOW)
        assert report is not None and report.created["customers"] == 4
    with unit_of_work(session_factory) as session:
        assert sandbox.seed_demo_if_empty(session, now=NOW) is None
        assert_ledger_consistent(session)


def test_opening_balances_come_from_the_opening_account(bank):
    with unit_of_work(bank) as session:
        opening = session.get(Account, "INT-OPENING")
        assert opening is not None and opening.kind == "internal" and opening.customer_id is None
        customer_money = session.scalar(select(func.count()).select_from(Account).where(Account.customer_id.is_(None)))
        assert customer_money == 4
        first = session.scalars(
            select(LedgerEntry).where(LedgerEntry.account_id == "A1001").order_by(LedgerEntry.id)
        ).first()
        assert first is not None and first.description == "开户余额"
        # History reads oldest→newest with a consistent running balance ending at the declared balance.
        entries = history.recent_entries(session, "C001", account_id="A1001", limit=100)
        assert entries[0].balance_after == Decimal("52380.50")


def test_reload_with_a_new_balance_posts_one_adjustment(bank):
    document = sandbox.demo_document()
    document["customers"][0]["accounts"][0]["balance"] = "60000.00"
    with unit_of_work(bank) as session:
        report = sandbox.load_sandbox(session, document, now=NOW)
    assert report.journals == 1 and report.updated.get("accounts") is None
    with unit_of_work(bank) as session:
        assert session.get(Account, "A1001").balance == Decimal("60000.00")  # type: ignore[union-attr]
        assert session.scalar(select(func.count()).select_from(Journal).where(Journal.kind == "adjustment")) == 1
        assert_ledger_consistent(session)


def test_new_customer_with_past_completed_transfer_to_internal_payee(session_factory):
    document = {
        "customers": [
            {
                "id": "X1",
                "name": "周杰",
                "surname": "周",
                "title": "先生",
                "accounts": [
                    {"id": "XA1", "kind": "debit", "name": "借记卡账户", "last4": "1111", "balance": "100.00"}
                ],
                "payees": [{"id": "XP1", "name": "吴敏", "bank_name": "示范银行", "internal_account_id": "XA2"}],
                "transfers": [
                    {
                        "id": "XT1",
                        "source_account_id": "XA1",
                        "payee_id": "XP1",
                        "amount": "50.00",
                        "status": "completed",
                        "created_at": "2026-11-01T10:00:00+08:00",
                    }
                ],
            },
            {
                "id": "X2",
                "name": "吴敏",
                "surname": "吴",
                "title": "女士",
                "accounts": [{"id": "XA2", "kind": "debit", "name": "借记卡账户", "last4": "2222", "balance": "10.00"}],
            },
        ]
    }
    with unit_of_work(session_factory) as session:
        sandbox.load_sandbox(session, document, now=NOW)
    with unit_of_work(session_factory) as session:
        assert session.get(Account, "XA1").balance == Decimal("100.00")  # type: ignore[union-attr]
        assert session.get(Account, "XA2").balance == Decimal("10.00")  # type: ignore[union-attr]
        transfer = session.get(Transfer, "XT1")
        assert transfer is not None and transfer.journal_id is not None
        assert [e.amount for e in history.recent_entries(session, "X2")] == [Decimal("50.00"), Decimal("-40.00")]
        assert_ledger_consistent(session)


def _bad(document_change, expected_path: str, session_factory) -> SandboxFormatError:
    document = sandbox.demo_document()
    document_change(document)
    with pytest.raises(SandboxFormatError) as caught, unit_of_work(session_factory) as session:
        sandbox.load_sandbox(session, document, now=NOW)
    assert caught.value.path == expected_path, str(caught.value)
    assert caught.value.code == "sandbox_format"
    return caught.value


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda d: d["customers"][0]["accounts"][0].update(balance="12,34.5.6"), "customers[0].accounts[0].balance"),
        (lambda d: d["customers"][0]["accounts"][0].update(balance="1.234"), "customers[0].accounts[0].balance"),
        (lambda d: d["customers"][0]["accounts"][0].update(balance="-5"), "customers[0].accounts[0].balance"),
        (lambda d: d["customers"][1].pop("name"), "customers[1].name"),
        (lambda d: d["customers"][0]["accounts"][1].update(kind="savings"), "customers[0].accounts[1].kind"),
        (lambda d: d["customers"][0]["cards"][0].update(last4="12a4"), "customers[0].cards[0].last4"),
        (lambda d: d["customers"][0]["cards"][0].update(account_id="NOPE"), "customers[0].cards[0].account_id"),
        (lambda d: d["customers"][0]["cards"][0].update(account_id="A2001"), "customers[0].cards[0].account_id"),
        (lambda d: d["customers"][0]["payees"][0].update(colour="red"), "customers[0].payees[0].colour"),
        (lambda d: d["customers"][0]["transfers"][2].pop("failure_reason"), "customers[0].transfers[2].failure_reason"),
        (
            lambda d: d["customers"][0]["transfers"][0].update(created_at="2026-11-01T10:00:00"),
            "customers[0].transfers[0].created_at",
        ),
        (lambda d: d["customers"][0]["transfers"][0].update(payee_id="P2002"), "customers[0].transfers[0].payee_id"),
        (
            lambda d: d["customers"][0]["deposits"][0].update(maturity_date="someday"),
            "customers[0].deposits[0].maturity_date",
        ),
        (
            lambda d: d["customers"][0]["loans"][0]["instalments"][0].update(amount="1.00"),
            "customers[0].loans[0].instalments[0].amount",
        ),
        (lambda d: d["customers"][1].update(id="C001"), "customers[1]"),
        (lambda d: d["customers"][0]["accounts"][0].update(id="INT-OPENING"), "customers[0].accounts[0].id"),
        (lambda d: d["branches"][0].update(city=""), "branches[0].city"),
        (lambda d: d["exchange_rates"][0].update(sell="1.0000"), "exchange_rates[0].sell"),
        (lambda d: d.update(customers={"C001": {}}), "customers"),
        (lambda d: d.update(version=2), "version"),
    ],
)
def test_bad_documents_name_the_bad_field(change, path, session_factory):
    _bad(change, path, session_factory)


def test_a_bad_document_writes_nothing(session_factory):
    document = sandbox.demo_document()
    document["customers"][3]["cards"][0]["expiry"] = "soon"
    with pytest.raises(SandboxFormatError), unit_of_work(session_factory) as session:
        sandbox.load_sandbox(session, document, now=NOW)
    with unit_of_work(session_factory) as session:
        assert session.scalar(select(func.count()).select_from(Card)) == 0


def test_load_file_reports_json_syntax_errors(session_factory, tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"customers": [}', encoding="utf-8")
    with pytest.raises(SandboxFormatError) as caught, unit_of_work(session_factory) as session:
        sandbox.load_file(session, path, now=NOW)
    assert "line 1" in caught.value.path
    good = tmp_path / "good.json"
    good.write_text(json.dumps(sandbox.demo_document(), ensure_ascii=False), encoding="utf-8")
    with unit_of_work(session_factory) as session:
        assert sandbox.load_file(session, good, now=NOW).created["customers"] == 4


def test_relative_dates_follow_the_load_day(session_factory):
    later = NOW + dt.timedelta(days=40)
    with unit_of_work(session_factory) as session:
        sandbox.load_sandbox(session, sandbox.demo_document(), now=later)
        soon = deposits.maturing_within(session, "C001", later.date(), 30)
        assert [d.maturity_date for d in soon] == [later.date() + dt.timedelta(days=18)]


def test_outbox_lists_newest_first(bank, settings, now):
    from bankcore import verification

    with unit_of_work(bank) as session:
        verification.issue(session, settings, "C002", "transfer", "T1", now)
        verification.issue(session, settings, "C002", "transfer", "T2", now + dt.timedelta(seconds=1))
        messages = sandbox.outbox(session, "C002")
    assert len(messages) == 2 and messages[0].created_at > messages[1].created_at
    assert all(m.created_at.tzinfo is not None for m in messages)


def test_demo_document_is_not_mutated_by_loading(session_factory):
    document = sandbox.demo_document()
    snapshot = copy.deepcopy(document)
    with unit_of_work(session_factory) as session:
        sandbox.load_sandbox(session, document, now=NOW)
    assert document == snapshot
