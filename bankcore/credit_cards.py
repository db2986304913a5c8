"""Credit-card statements and repayments from a debit account (prepare, then execute at most once)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from bankcore.accounts import default_debit_account, load_own_account
from bankcore.database import lock_customer
from bankcore.errors import InvalidStateError, NotFoundError, RepaymentRejected
from bankcore.ledger import Leg, available, checked_amount, lock_accounts, new_id, post
from bankcore.models import Account, Card, CardRepayment

REPAYMENT_MODES = ("full", "minimum", "amount")
ZERO = Decimal("0.00")


@dataclass(frozen=True)
class StatementView:
    account_id: str
    account_name: str
    card_last4: str | None
    currency: str
    statement_balance: Decimal  # still to pay of the last statement
    minimum_payment: Decimal  # still to pay to avoid a late fee
    statement_date: dt.date | None
    due_date: dt.date | None
    current_balance: Decimal  # everything owed now, including spending after the statement
    available_credit: Decimal
    credit_limit: Decimal


@dataclass(frozen=True)
class RepaymentView:
    id: str
    credit_account_id: str
    card_last4: str | None
    source_account_id: str
    source_account_last4: str | None
    mode: str
    amount: Decimal
    status: str  # pending_confirmation | completed | failed | cancelled
    failure_reason: str | None
    idempotency_key: str
    created_at: dt.datetime
    executed_at: dt.datetime | None
    journal_id: int | None


def _credit_account(session: Session, customer_id: str, last4: str | None) -> Account:
    accounts = list(
        session.scalars(
            select(Account)
            .where(Account.customer_id == customer_id, Account.kind == "credit")
            .order_by(Account.opened_at, Account.id)
        )
    )
    if last4:
        card_accounts = set(
            session.scalars(select(Card.account_id).where(Card.customer_id == customer_id, Card.last4 == last4))
        )
        accounts = [a for a in accounts if a.last4 == last4 or a.id in card_accounts]
    if not accounts:
        raise NotFoundError("card_not_found", last4=last4)
    return accounts[0]


def _owed(account: Account) -> Decimal:
    return max(-account.balance, ZERO)


def statement(session: Session, customer_id: str, last4: str | None = None) -> StatementView:
    account = _credit_account(session, customer_id, last4)
    return StatementView(
        account_id=account.id,
        account_name=account.name,
        card_last4=account.last4,
        currency=account.currency,
        statement_balance=account.statement_balance or ZERO,
        minimum_payment=account.minimum_payment or ZERO,
        statement_date=account.statement_date,
        due_date=account.statement_due_date,
        current_balance=_owed(account),
        available_credit=available(account),
        credit_limit=account.credit_limit or ZERO,
    )


def _view(session: Session, repayment: CardRepayment) -> RepaymentView:
    credit = session.get(Account, repayment.credit_account_id)
    source = session.get(Account, repayment.source_account_id)
    assert credit is not None and source is not None
    return RepaymentView(
        id=repayment.id,
        credit_account_id=credit.id,
        card_last4=credit.last4,
        source_account_id=source.id,
        source_account_last4=source.last4,
        mode=repayment.mode,
        amount=repayment.amount,
        status=repayment.status,
        failure_reason=repayment.failure_reason,
        idempotency_key=repayment.idempotency_key,
        created_at=repayment.created_at,
        executed_at=repayment.executed_at,
        journal_id=repayment.journal_id,
    )


def prepare_repayment(
    session: Session,
    customer_id: str,
    *,
    mode: str,
    amount: Decimal | int | str | None = None,
    last4: str | None = None,
    source_account_id: str | None = None,
    channel: str,
    now: dt.datetime,
    idempotency_key: str | None = None,
) -> RepaymentView:
    """Work out the amount for `mode` (full statement, minimum, or a given amount) and check the source."""
    if idempotency_key is not None:
        existing = session.scalar(
            select(CardRepayment).where(
                CardRepayment.idempotency_key == idempotency_key, CardRepayment.customer_id == customer_id
            )
        )
        if existing is not None:
            return _view(session, existing)
    if mode not in REPAYMENT_MODES:
        raise RepaymentRejected("invalid_repayment_mode", mode=mode)
    credit = _credit_account(session, customer_id, last4)
    owed = _owed(credit)
    if mode == "full":
        value = credit.statement_balance or owed
    elif mode == "minimum":
        value = credit.minimum_payment or ZERO
    else:
        if amount is None:
            raise RepaymentRejected("invalid_amount")
        value = checked_amount(amount)
        if value > owed:
            raise RepaymentRejected("repayment_exceeds_balance", owed=str(owed))
    value = min(value, owed)
    if value <= 0:
        raise RepaymentRejected("nothing_to_repay")
    source = (
        load_own_account(session, customer_id, source_account_id)
        if source_account_id
        else default_debit_account(session, customer_id)
    )
    if source.kind != "debit":
        raise RepaymentRejected("source_not_debit", account_id=source.id)
    if source.status != "active":
        raise RepaymentRejected("account_frozen", account_id=source.id)
    if available(source) < value:
        raise RepaymentRejected("insufficient_funds", available=str(available(source)))
    repayment = CardRepayment(
        id=new_id("R"),
        customer_id=customer_id,
        credit_account_id=credit.id,
        source_account_id=source.id,
        mode=mode,
        amount=value,
        channel=channel,
        idempotency_key=idempotency_key or uuid.uuid4().hex,
        status="pending_confirmation",
        created_at=now,
    )
    session.add(repayment)
    session.flush()
    return _view(session, repayment)


def _load(session: Session, customer_id: str, repayment_id: str) -> CardRepayment:
    repayment = session.execute(
        select(CardRepayment)
        .where(CardRepayment.id == repayment_id, CardRepayment.customer_id == customer_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if repayment is None:
        raise NotFoundError("repayment_not_found", repayment_id=repayment_id)
    return repayment


def get_repayment(session: Session, customer_id: str, repayment_id: str) -> RepaymentView:
    return _view(session, _load(session, customer_id, repayment_id))


def execute_repayment(session: Session, customer_id: str, repayment_id: str, now: dt.datetime) -> RepaymentView:
    """Move the money once; calling again returns the stored outcome and moves nothing."""
    repayment = _load(session, customer_id, repayment_id)
    if repayment.status in ("completed", "failed"):
        return _view(session, repayment)
    if repayment.status != "pending_confirmation":
        raise InvalidStateError("repayment_not_pending", status=repayment.status)
    claimed = session.execute(
        update(CardRepayment)
        .where(CardRepayment.id == repayment.id, CardRepayment.status == "pending_confirmation")
        .values(status="executing")
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        session.refresh(repayment)
        return _view(session, repayment)
    set_committed_value(repayment, "status", "executing")
    lock_customer(session, customer_id)
    accounts = lock_accounts(session, [repayment.source_account_id, repayment.credit_account_id])
    source, credit = accounts[repayment.source_account_id], accounts[repayment.credit_account_id]
    failure = None
    if source.status != "active":
        failure = "account_frozen"
    elif available(source) < repayment.amount:
        failure = "insufficient_funds"
    elif repayment.amount > _owed(credit):
        failure = "repayment_exceeds_balance"
    if failure is None:
        label = f"信用卡还款（尾号{credit.last4}）" if credit.last4 else "信用卡还款"
        journal = post(
            session,
            kind="card_repayment",
            description=f"card repayment {repayment.id}",
            created_at=now,
            legs=[
                Leg(source, -repayment.amount, label, credit.name),
                Leg(credit, repayment.amount, "还款", source.name),
            ],
        )
        # What remains of the statement and of its minimum payment.
        credit.statement_balance = max((credit.statement_balance or ZERO) - repayment.amount, ZERO)
        credit.minimum_payment = max((credit.minimum_payment or ZERO) - repayment.amount, ZERO)
        repayment.status = "completed"
        repayment.journal_id = journal.id
    else:
        repayment.status = "failed"
        repayment.failure_reason = failure
    repayment.executed_at = now
    session.flush()
    return _view(session, repayment)


def cancel_repayment(session: Session, customer_id: str, repayment_id: str) -> RepaymentView:
    repayment = _load(session, customer_id, repayment_id)
    if repayment.status == "pending_confirmation":
        repayment.status = "cancelled"
        session.flush()
    elif repayment.status != "cancelled":
        raise InvalidStateError("repayment_not_cancellable", status=repayment.status)
    return _view(session, repayment)
