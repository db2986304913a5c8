"""Transfers: validation codes, verification, execution at most once, failures, limits, concurrency."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bankcore import accounts, sandbox, transfers, verification
from bankcore.database import unit_of_work
from bankcore.errors import BankError, InvalidAmountError, InvalidStateError, TransferRejected
from bankcore.models import Account, Customer, Journal, LedgerEntry, Transfer
from bankcore.settings import Settings
from tests.core.support import assert_ledger_consistent, clear_risk

Factory = sessionmaker[Session]


def _balance(factory: Factory, account_id: str) -> Decimal:
    with unit_of_work(factory) as session:
        account = session.get(Account, account_id)
        assert account is not None
        return account.balance


def _prepare(factory: Factory, settings: Settings, customer: str, payee: str, amount: str, now: dt.datetime):
    with unit_of_work(factory) as session:
        return transfers.prepare(
            session, settings, customer, payee_name=payee, amount=amount, channel="webchat", now=now
        )


def _authorize(
    factory: Factory,
    settings: Settings,
    sms_code: Callable[[str], str],
    customer: str,
    transfer_id: str,
    now: dt.datetime,
) -> None:
    with unit_of_work(factory) as session:
        clear_risk(session, customer, transfer_id, now)
        transfers.request_verification(session, settings, customer, transfer_id, now)
    code = sms_code(customer)
    with unit_of_work(factory) as session:
        result = transfers.authorize(
            session, settings, customer, transfer_id, verification.digest_code(settings.secret_key, code), now
        )
    assert result.outcome == "verified"


def _authorized(factory, settings, sms_code, customer, payee, amount, now) -> str:
    transfer = _prepare(factory, settings, customer, payee, amount, now)
    _authorize(factory, settings, sms_code, customer, transfer.id, now)
    return transfer.id


def _execute(factory: Factory, settings: Settings, customer: str, transfer_id: str, now: dt.datetime):
    with unit_of_work(factory) as session:
        return transfers.execute(session, settings, customer, transfer_id, now)


def _rejected(factory, settings, customer, payee, amount, now) -> str:
    with pytest.raises(BankError) as caught:
        _prepare(factory, settings, customer, payee, amount, now)
    assert caught.value.message_key == f"utter_error_{caught.value.code}"
    return caught.value.code


def test_transfer_to_external_payee_moves_money_once(bank, settings, sms_code, now):
    transfer_id = _authorized(bank, settings, sms_code, "C001", "李四", "2500", now)
    first = _execute(bank, settings, "C001", transfer_id, now)
    assert first.status == "completed" and first.journal_id is not None
    assert first.amount == Decimal("2500.00") and first.payee_name == "李四"
    second = _execute(bank, settings, "C001", transfer_id, now + dt.timedelta(seconds=5))
    assert second == first
    assert _balance(bank, "A1001") == Decimal("49880.50")
    with unit_of_work(bank) as session:
        journals = session.scalar(
            select(func.count()).select_from(Journal).where(Journal.description == f"transfer {transfer_id}")
        )
        assert journals == 1
        assert_ledger_consistent(session)


def test_transfer_to_internal_payee_credits_their_account(bank, settings, sms_code, now):
    before = _balance(bank, "A3001")
    transfer_id = _authorized(bank, settings, sms_code, "C001", "张三", "500.5", now)
    assert _execute(bank, settings, "C001", transfer_id, now).status == "completed"
    assert _balance(bank, "A3001") == before + Decimal("500.50")
    with unit_of_work(bank) as session:
        assert_ledger_consistent(session)


@pytest.mark.parametrize("amount", ["0", "-5", "0.001", "1000000000.01", "abc", "NaN", "Infinity", "", 1.5])
def test_invalid_amounts_are_rejected(bank, settings, now, amount):
    with pytest.raises(InvalidAmountError) as caught, unit_of_work(bank) as session:
        transfers.prepare(session, settings, "C001", payee_name="李四", amount=amount, channel="webchat", now=now)
    assert caught.value.code == "invalid_amount"


def test_unknown_payee_is_rejected(bank, settings, now):
    assert _rejected(bank, settings, "C001", "赵六", "100", now) == "unknown_payee"
    # Someone else's payee is unknown to this customer.
    assert _rejected(bank, settings, "C001", "赵敏", "100", now) == "unknown_payee"


def test_payee_name_ignores_width_and_spaces(bank, settings, now):
    assert _prepare(bank, settings, "C001", " 李 四 ", "100", now).payee_name == "李四"


def test_transfer_to_own_account_is_rejected(bank, settings, now):
    with unit_of_work(bank) as session:
        sandbox.load_sandbox(
            session,
            {
                "customers": [
                    {
                        "id": "C001",
                        "name": "王伟",
                        "surname": "王",
                        "title": "先生",
                        "phone": "13801012345",
                        "payees": [
                            {"id": "P1009", "name": "我自己", "bank_name": "示范银行", "internal_account_id": "A1001"}
                        ],
                    }
                ]
            },
            now=now,
        )
    assert _rejected(bank, settings, "C001", "我自己", "100", now) == "self_transfer"


def test_frozen_account_cannot_send(bank, settings, now):
    with unit_of_work(bank) as session:
        account = session.get(Account, "A1001")
        assert account is not None
        account.status = "frozen"
    assert _rejected(bank, settings, "C001", "李四", "100", now) == "account_frozen"


def test_insufficient_funds_is_rejected(bank, settings, now):
    assert _rejected(bank, settings, "C003", "李娜", "8420.76", now) == "insufficient_funds"
    assert _prepare(bank, settings, "C003", "李娜", "8420.75", now).status == "pending_confirmation"


def test_single_limit(bank, settings, now):
    assert settings.transfer_single_limit == Decimal("50000")
    assert _rejected(bank, settings, "C001", "李四", "50000.01", now) == "over_single_limit"
    assert _prepare(bank, settings, "C001", "李四", "50000", now).amount == Decimal("50000.00")


def _set_daily_limit(factory: Factory, customer_id: str, limit: str, timezone: str | None = None) -> None:
    with unit_of_work(factory) as session:
        customer = session.get(Customer, customer_id)
        assert customer is not None
        customer.daily_transfer_limit = Decimal(limit)
        if timezone:
            customer.timezone = timezone


def test_daily_limit_counts_completed_and_authorized(bank, settings, sms_code, now):
    _set_daily_limit(bank, "C001", "3000")
    done = _authorized(bank, settings, sms_code, "C001", "李四", "1500", now)
    _execute(bank, settings, "C001", done, now)
    _authorized(bank, settings, sms_code, "C001", "王芳", "1000", now)  # authorised, not executed
    assert _rejected(bank, settings, "C001", "李四", "500.01", now) == "over_daily_limit"
    assert _prepare(bank, settings, "C001", "李四", "500", now).status == "pending_confirmation"
    # Prepared-but-unconfirmed transfers do not use the limit.
    assert _prepare(bank, settings, "C001", "李四", "500", now).status == "pending_confirmation"


def test_daily_limit_is_the_customer_local_day(bank, settings, sms_code):
    _set_daily_limit(bank, "C001", "3000")
    late_evening = dt.datetime(2026, 11, 20, 15, 30, tzinfo=dt.UTC)  # 23:30 in Beijing
    done = _authorized(bank, settings, sms_code, "C001", "李四", "2500", late_evening)
    _execute(bank, settings, "C001", done, late_evening)
    assert _rejected(bank, settings, "C001", "李四", "1000", late_evening + dt.timedelta(minutes=20)) == (
        "over_daily_limit"
    )
    after_midnight = dt.datetime(2026, 11, 20, 16, 30, tzinfo=dt.UTC)  # 00:30 next day in Beijing
    assert _prepare(bank, settings, "C001", "李四", "1000", after_midnight).status == "pending_confirmation"
    # For a customer living in London both moments fall on the same day.
    _set_daily_limit(bank, "C001", "3000", timezone="Europe/London")
    assert _rejected(bank, settings, "C001", "李四", "1000", after_midnight) == "over_daily_limit"


def test_execute_re_checks_the_daily_limit(bank, settings, sms_code, now):
    first = _authorized(bank, settings, sms_code, "C001", "李四", "2000", now)
    second = _authorized(bank, settings, sms_code, "C001", "王芳", "2000", now)
    _set_daily_limit(bank, "C001", "3000")  # lowered after both were authorised
    assert _execute(bank, settings, "C001", first, now).status == "completed"
    failed = _execute(bank, settings, "C001", second, now)
    assert (failed.status, failed.failure_reason) == ("failed", "over_daily_limit")


def test_closed_payee_account_fails_without_moving_money(bank, settings, sms_code, now):
    before = _balance(bank, "A1001")
    transfer_id = _authorized(bank, settings, sms_code, "C001", "刘洋", "3000", now)
    result = _execute(bank, settings, "C001", transfer_id, now)
    assert (result.status, result.failure_reason, result.journal_id) == ("failed", "payee_account_closed", None)
    assert _execute(bank, settings, "C001", transfer_id, now) == result
    assert _balance(bank, "A1001") == before
    with unit_of_work(bank) as session:
        failed = transfers.failed_transfers(session, "C001", payee_name="刘洋")
        assert failed[0].id == transfer_id and len(failed) == 2
        assert_ledger_consistent(session)


def test_invalid_payee_account_fails(bank, settings, sms_code, now):
    transfer_id = _authorized(bank, settings, sms_code, "C002", "孙磊", "100", now)
    result = _execute(bank, settings, "C002", transfer_id, now)
    assert (result.status, result.failure_reason) == ("failed", "payee_account_invalid")
    assert _balance(bank, "A2001") == Decimal("12860.00")


def test_execute_requires_authorization(bank, settings, now):
    transfer = _prepare(bank, settings, "C001", "李四", "100", now)
    with pytest.raises(InvalidStateError) as caught:
        _execute(bank, settings, "C001", transfer.id, now)
    assert caught.value.code == "transfer_not_authorized"
    with unit_of_work(bank) as session:
        clear_risk(session, "C001", transfer.id, now)
        transfers.request_verification(session, settings, "C001", transfer.id, now)
    with pytest.raises(InvalidStateError):
        _execute(bank, settings, "C001", transfer.id, now)
    assert _balance(bank, "A1001") == Decimal("52380.50")


def test_another_customer_cannot_touch_a_transfer(bank, settings, sms_code, now):
    transfer_id = _authorized(bank, settings, sms_code, "C001", "李四", "100", now)
    with pytest.raises(BankError) as caught:
        _execute(bank, settings, "C002", transfer_id, now)
    assert caught.value.code == "transfer_not_found"


def test_execute_re_checks_funds(bank, settings, sms_code, now):
    first = _authorized(bank, settings, sms_code, "C003", "李娜", "5000", now)
    second = _authorized(bank, settings, sms_code, "C003", "李娜", "5000", now)
    assert _execute(bank, settings, "C003", first, now).status == "completed"
    result = _execute(bank, settings, "C003", second, now)
    assert (result.status, result.failure_reason) == ("failed", "insufficient_funds")
    assert _balance(bank, "A3001") == Decimal("3420.75")


def test_too_many_wrong_codes_cancel_the_transfer(bank, settings, sms_code, now):
    transfer = _prepare(bank, settings, "C001", "李四", "100", now)
    with unit_of_work(bank) as session:
        clear_risk(session, "C001", transfer.id, now)
        transfers.request_verification(session, settings, "C001", transfer.id, now)
    code = sms_code("C001")
    wrong = verification.digest_code(settings.secret_key, "000000" if code != "000000" else "111111")
    outcomes = []
    for _ in range(settings.otp_max_attempts):
        with unit_of_work(bank) as session:
            result = transfers.authorize(session, settings, "C001", transfer.id, wrong, now)
            outcomes.append((result.outcome, result.attempts_left))
    assert outcomes == [("wrong", 2), ("wrong", 1), ("locked", 0)]
    with unit_of_work(bank) as session:
        view = transfers.get_transfer(session, "C001", transfer.id)
        assert (view.status, view.failure_reason) == ("cancelled", "verification_locked")
    right = verification.digest_code(settings.secret_key, code)
    with pytest.raises(InvalidStateError), unit_of_work(bank) as session:
        transfers.authorize(session, settings, "C001", transfer.id, right, now)
    with pytest.raises(InvalidStateError):
        _execute(bank, settings, "C001", transfer.id, now)


def test_expired_code_keeps_the_transfer_waiting_for_a_new_one(bank, settings, sms_code, now):
    transfer = _prepare(bank, settings, "C001", "李四", "100", now)
    with unit_of_work(bank) as session:
        clear_risk(session, "C001", transfer.id, now)
        transfers.request_verification(session, settings, "C001", transfer.id, now)
    late = now + dt.timedelta(seconds=settings.otp_ttl_seconds)
    digest = verification.digest_code(settings.secret_key, sms_code("C001"))
    with unit_of_work(bank) as session:
        assert transfers.authorize(session, settings, "C001", transfer.id, digest, late).outcome == "expired"
        assert transfers.get_transfer(session, "C001", transfer.id).status == "awaiting_verification"
    _authorize(bank, settings, sms_code, "C001", transfer.id, late)
    assert _execute(bank, settings, "C001", transfer.id, late).status == "completed"


def test_a_used_code_cannot_authorise_again(bank, settings, sms_code, now):
    transfer_id = _authorized(bank, settings, sms_code, "C001", "李四", "100", now)
    digest = verification.digest_code(settings.secret_key, sms_code("C001"))
    with unit_of_work(bank) as session:
        assert verification.check(session, settings, "C001", transfer_id, digest, now).outcome == "reused"
    with pytest.raises(InvalidStateError), unit_of_work(bank) as session:
        transfers.authorize(session, settings, "C001", transfer_id, digest, now)


def test_cancel(bank, settings, sms_code, now):
    transfer_id = _authorized(bank, settings, sms_code, "C001", "李四", "100", now)
    with unit_of_work(bank) as session:
        assert transfers.cancel(session, "C001", transfer_id, now).status == "cancelled"
        assert transfers.cancel(session, "C001", transfer_id, now).status == "cancelled"
    with pytest.raises(InvalidStateError):
        _execute(bank, settings, "C001", transfer_id, now)
    done = _authorized(bank, settings, sms_code, "C001", "李四", "100", now)
    _execute(bank, settings, "C001", done, now)
    with pytest.raises(InvalidStateError), unit_of_work(bank) as session:
        transfers.cancel(session, "C001", done, now)


def test_prepare_with_the_same_idempotency_key_returns_the_first_transfer(bank, settings, now):
    with unit_of_work(bank) as session:
        first = transfers.prepare(
            session,
            settings,
            "C001",
            payee_name="李四",
            amount="100",
            channel="webchat",
            now=now,
            idempotency_key="turn-42",
        )
        again = transfers.prepare(
            session,
            settings,
            "C001",
            payee_name="李四",
            amount="100",
            channel="webchat",
            now=now,
            idempotency_key="turn-42",
        )
        assert again.id == first.id
        assert (
            session.scalar(select(func.count()).select_from(Transfer).where(Transfer.idempotency_key == "turn-42")) == 1
        )


def test_failed_transfer_inquiry_finds_yesterdays_failure(bank, now):
    with unit_of_work(bank) as session:
        failed = transfers.failed_transfers(session, "C001", since=now - dt.timedelta(days=2))
    assert len(failed) == 1
    assert (failed[0].payee_name, failed[0].failure_reason, failed[0].amount) == (
        "刘洋",
        "payee_account_closed",
        Decimal("3000.00"),
    )
    assert failed[0].executed_at is not None and failed[0].executed_at.tzinfo is not None


def test_concurrent_transfers_never_overdraw(bank, settings, sms_code, now):
    """20 threads execute 20 different transfers of 4,000 from 52,380.50: only 13 can be paid."""
    ids = [_authorized(bank, settings, sms_code, "C001", "李四", "4000", now) for _ in range(20)]
    barrier = threading.Barrier(len(ids))
    results: dict[str, transfers.TransferView] = {}
    errors: list[BaseException] = []

    def run(transfer_id: str) -> None:
        try:
            barrier.wait()
            results[transfer_id] = _execute(bank, settings, "C001", transfer_id, now)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    completed = [r for r in results.values() if r.status == "completed"]
    failed = [r for r in results.values() if r.status == "failed"]
    assert len(completed) == 13 and len(failed) == 7
    assert {r.failure_reason for r in failed} == {"insufficient_funds"}
    balance = _balance(bank, "A1001")
    assert balance == Decimal("52380.50") - sum(r.amount for r in completed) == Decimal("380.50")
    with unit_of_work(bank) as session:
        entries = session.scalars(select(LedgerEntry).where(LedgerEntry.account_id == "A1001")).all()
        assert min(e.balance_after for e in entries) >= 0
        assert_ledger_consistent(session)


def test_the_same_transfer_executed_concurrently_moves_money_once(bank, settings, sms_code, now):
    transfer_id = _authorized(bank, settings, sms_code, "C001", "李四", "1000", now)
    barrier = threading.Barrier(10)
    results: list[transfers.TransferView] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            results.append(_execute(bank, settings, "C001", transfer_id, now))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert len(results) == 10 and len({r.journal_id for r in results}) == 1
    assert {r.status for r in results} == {"completed"}
    assert _balance(bank, "A1001") == Decimal("51380.50")
    with unit_of_work(bank) as session:
        assert (
            session.scalar(
                select(func.count()).select_from(Journal).where(Journal.description == f"transfer {transfer_id}")
            )
            == 1
        )
        assert_ledger_consistent(session)


def test_accounts_view_matches_after_transfer(bank, settings, sms_code, now):
    transfer_id = _authorized(bank, settings, sms_code, "C001", "王芳", "80.25", now)
    _execute(bank, settings, "C001", transfer_id, now)
    with unit_of_work(bank) as session:
        view = accounts.find_account(session, "C001", kind="debit")
    assert view is not None and view.balance == view.available == Decimal("52300.25")


def test_prepare_reports_rejections_as_transfer_rejected(bank, settings, now):
    with pytest.raises(TransferRejected):
        _prepare(bank, settings, "C001", "nobody", "1", now)
