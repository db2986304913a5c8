"""Time deposits: amount, rate, maturity date and whether they renew automatically."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from bankcore.models import CENT, Deposit


@dataclass(frozen=True)
class DepositView:
    id: str
    product: str  # fixed | large_cd | notice
    name: str
    amount: Decimal
    currency: str
    rate: Decimal  # yearly, percent
    term_months: int
    start_date: dt.date
    maturity_date: dt.date
    auto_renew: bool
    status: str
    expected_interest: Decimal  # simple interest over the term, as Chinese time deposits pay

    def days_to_maturity(self, today: dt.date) -> int:
        return (self.maturity_date - today).days


def _view(deposit: Deposit) -> DepositView:
    interest = (deposit.amount * deposit.rate / 100 * deposit.term_months / 12).quantize(CENT)
    return DepositView(
        id=deposit.id,
        product=deposit.product,
        name=deposit.name,
        amount=deposit.amount,
        currency=deposit.currency,
        rate=deposit.rate,
        term_months=deposit.term_months,
        start_date=deposit.start_date,
        maturity_date=deposit.maturity_date,
        auto_renew=deposit.auto_renew,
        status=deposit.status,
        expected_interest=interest,
    )


def list_deposits(session: Session, customer_id: str) -> list[DepositView]:
    """Active deposits, soonest maturity first."""
    rows = session.scalars(
        select(Deposit)
        .where(Deposit.customer_id == customer_id, Deposit.status == "active")
        .order_by(Deposit.maturity_date, Deposit.id)
    )
    return [_view(d) for d in rows]


def maturing_within(session: Session, customer_id: str, today: dt.date, days: int = 30) -> list[DepositView]:
    return [d for d in list_deposits(session, customer_id) if 0 <= d.days_to_maturity(today) <= days]
