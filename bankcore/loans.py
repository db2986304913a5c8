"""Loans: next instalment (date and amount) and paying it from a debit account at most once."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from bankcore.accounts import default_debit_account, load_own_account
from bankcore.database import lock_customer
from bankcore.errors import NotFoundError, RepaymentRejected
from bankcore.ledger import Leg, available, lock_accounts, new_id, post
from bankcore.models import LOAN_SERVICING_ACCOUNT_ID, Account, Loan, LoanInstalment, LoanRepayment


@dataclass(frozen=True)
class LoanView:
    id: str
    name: str
    product: str  # mortgage | consumer | car | business
    principal: Decimal
    outstanding: Decimal
    rate: Decimal  # yearly, percent
    next_due_date: dt.date | None
    next_amount: Decimal | None
    next_seq: int | None
    remaining_instalments: int
    repayment_account_id: str | None
    end_date: dt.date
    status: str


@dataclass(frozen=True)
class LoanRepaymentView:
    id: str
    loan_id: str
    instalment_seq: int | None
    amount: Decimal
    source_account_id: str
    status: str  # completed | failed
    failure_reason: str | None
    idempotency_key: str
    created_at: dt.datetime
    journal_id: int | None


def _next_instalment(session: Session, loan_id: str) -> LoanInstalment | None:
    return session.scalar(
        select(LoanInstalment)
        .where(LoanInstalment.loan_id == loan_id, LoanInstalment.status == "due")
        .order_by(LoanInstalment.seq)
        .limit(1)
    )


def _view(session: Session, loan: Loan) -> LoanView:
    due = list(
        session.scalars(
            select(LoanInstalment)
            .where(LoanInstalment.loan_id == loan.id, LoanInstalment.status == "due")
            .order_by(LoanInstalment.seq)
        )
    )
    first = due[0] if due else None
    return LoanView(
        id=loan.id,
        name=loan.name,
        product=loan.product,
        principal=loan.principal,
        outstanding=loan.outstanding,
        rate=loan.rate,
        next_due_date=first.due_date if first else None,
        next_amount=first.amount if first else None,
        next_seq=first.seq if first else None,
        remaining_instalments=len(due),
        repayment_account_id=loan.repayment_account_id,
        end_date=loan.end_date,
        status=loan.status,
    )


def list_loans(session: Session, customer_id: str) -> list[LoanView]:
    loans = session.scalars(
        select(Loan).where(Loan.customer_id == customer_id, Loan.status == "active").order_by(Loan.start_date)
    )
    return [_view(session, loan) for loan in loans]


def _own_loan(session: Session, customer_id: str, loan_id: str | None, *, lock: bool = False) -> Loan:
    query = select(Loan).where(Loan.customer_id == customer_id, Loan.status == "active")
    if loan_id:
        query = query.where(Loan.id == loan_id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    loans = list(session.scalars(query.order_by(Loan.start_date, Loan.id)))
    if not loans or (loan_id is None and len(loans) > 1):
        # Several loans and none named: the action must ask which one.
        raise NotFoundError("loan_not_found", loan_id=loan_id, candidates=[loan.id for loan in loans])
    return loans[0]


def get_loan(session: Session, customer_id: str, loan_id: str | None = None) -> LoanView:
    return _view(session, _own_loan(session, customer_id, loan_id))


def _repayment_view(repayment: LoanRepayment) -> LoanRepaymentView:
    return LoanRepaymentView(
        id=repayment.id,
        loan_id=repayment.loan_id,
        instalment_seq=repayment.instalment_seq,
        amount=repayment.amount,
        source_account_id=repayment.source_account_id,
        status=repayment.status,
        failure_reason=repayment.failure_reason,
        idempotency_key=repayment.idempotency_key,
        created_at=repayment.created_at,
        journal_id=repayment.journal_id,
    )


def repay_instalment(
    session: Session,
    customer_id: str,
    loan_id: str | None = None,
    *,
    idempotency_key: str,
    source_account_id: str | None = None,
    channel: str = "app",
    now: dt.datetime,
) -> LoanRepaymentView:
    """Pay the next due instalment early; the same idempotency key always returns the first outcome.

    A failure (frozen account, funds) is stored under the key too: retrying needs a fresh key.
    """
    # The customer lock serialises two calls with the same key, so the lookup below is reliable.
    lock_customer(session, customer_id)
    existing = session.scalar(select(LoanRepayment).where(LoanRepayment.idempotency_key == idempotency_key))
    if existing is not None:
        if existing.customer_id != customer_id:
            raise NotFoundError("loan_not_found", loan_id=loan_id)
        return _repayment_view(existing)
    loan = _own_loan(session, customer_id, loan_id, lock=True)
    instalment = _next_instalment(session, loan.id)
    if instalment is None:
        raise RepaymentRejected("no_instalment_due", loan_id=loan.id)
    if source_account_id:
        source: Account = load_own_account(session, customer_id, source_account_id)
    elif loan.repayment_account_id:
        source = load_own_account(session, customer_id, loan.repayment_account_id)
    else:
        source = default_debit_account(session, customer_id)
    if source.kind != "debit":
        raise RepaymentRejected("source_not_debit", account_id=source.id)
    accounts = lock_accounts(session, [source.id, LOAN_SERVICING_ACCOUNT_ID])
    source, servicing = accounts[source.id], accounts[LOAN_SERVICING_ACCOUNT_ID]
    repayment = LoanRepayment(
        id=new_id("LR"),
        customer_id=customer_id,
        loan_id=loan.id,
        instalment_seq=instalment.seq,
        source_account_id=source.id,
        amount=instalment.amount,
        channel=channel,
        idempotency_key=idempotency_key,
        status="failed",
        created_at=now,
    )
    if source.status != "active":
        repayment.failure_reason = "account_frozen"
    elif available(source) < instalment.amount:
        repayment.failure_reason = "insufficient_funds"
    else:
        journal = post(
            session,
            kind="loan_repayment",
            description=f"loan {loan.id} instalment {instalment.seq}",
            created_at=now,
            legs=[
                Leg(source, -instalment.amount, f"{loan.name}第{instalment.seq}期还款", loan.name),
                Leg(servicing, instalment.amount, f"loan {loan.id} #{instalment.seq}", customer_id),
            ],
        )
        instalment.status = "paid"
        instalment.paid_at = now
        loan.outstanding = max(loan.outstanding - instalment.principal_part, Decimal("0.00"))
        repayment.status = "completed"
        repayment.journal_id = journal.id
    session.add(repayment)
    session.flush()
    return _repayment_view(repayment)
