"""Read access to a customer's accounts as small immutable views."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import case, select
from sqlalchemy.orm import Session

from bankcore.errors import NotFoundError
from bankcore.ledger import available
from bankcore.models import Account

CUSTOMER_KINDS = ("debit", "credit")


@dataclass(frozen=True)
class AccountView:
    id: str
    customer_id: str
    kind: str  # debit | credit
    name: str
    last4: str | None
    currency: str
    balance: Decimal  # signed; a credit account owing money is negative
    available: Decimal  # debit: the balance; credit: credit limit + balance
    credit_limit: Decimal | None
    status: str  # active | frozen | closed

    @property
    def owed(self) -> Decimal:
        """What the customer owes on a credit account (0 for debit accounts)."""
        return -self.balance if self.kind == "credit" and self.balance < 0 else Decimal("0.00")


def account_view(account: Account) -> AccountView:
    return AccountView(
        id=account.id,
        customer_id=account.customer_id or "",
        kind=account.kind,
        name=account.name,
        last4=account.last4,
        currency=account.currency,
        balance=account.balance,
        available=available(account),
        credit_limit=account.credit_limit,
        status=account.status,
    )


def _customer_accounts(session: Session, customer_id: str, kind: str | None) -> list[Account]:
    query = select(Account).where(Account.customer_id == customer_id, Account.kind.in_(CUSTOMER_KINDS))
    if kind is not None:
        query = query.where(Account.kind == kind)
    # Debit accounts first: the first active debit account is the default source of payments.
    order = case((Account.kind == "debit", 0), else_=1)
    return list(session.scalars(query.order_by(order, Account.opened_at, Account.id)))


def list_accounts(session: Session, customer_id: str, kind: str | None = None) -> list[AccountView]:
    return [account_view(a) for a in _customer_accounts(session, customer_id, kind)]


def load_own_account(session: Session, customer_id: str, account_id: str) -> Account:
    account = session.get(Account, account_id)
    if account is None or account.customer_id != customer_id:
        # Someone else's account is reported exactly like a missing one.
        raise NotFoundError("account_not_found", account_id=account_id)
    return account


def get_account(session: Session, customer_id: str, account_id: str) -> AccountView:
    return account_view(load_own_account(session, customer_id, account_id))


def find_account(
    session: Session, customer_id: str, *, kind: str | None = None, last4: str | None = None
) -> AccountView | None:
    """The customer's account matching kind and/or last4; the first (debit first) when several match."""
    for account in _customer_accounts(session, customer_id, kind):
        if last4 is None or account.last4 == last4:
            return account_view(account)
    return None


def default_debit_account(session: Session, customer_id: str) -> Account:
    for account in _customer_accounts(session, customer_id, "debit"):
        if account.status == "active":
            return account
    for account in _customer_accounts(session, customer_id, "debit"):
        return account
    raise NotFoundError("account_not_found", kind="debit")
