"""Double-entry postings: every journal's legs sum to zero and each entry records the balance after it."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from bankcore.errors import ConcurrencyError, InvalidAmountError, TransferRejected
from bankcore.models import CENT, Account, Journal, LedgerEntry

MAX_AMOUNT = Decimal(10) ** 9


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(6).upper()}"


def checked_amount(value: Decimal | int | str) -> Decimal:
    """A positive amount with at most two decimals and at most 10^9, else `invalid_amount`."""
    if isinstance(value, bool | float):
        # Floats cannot carry exact cents; callers parse text with bankcore.money instead.
        raise InvalidAmountError(value=str(value))
    try:
        amount = Decimal(str(value).strip()) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise InvalidAmountError(value=str(value)) from None
    if not amount.is_finite() or amount <= 0 or amount > MAX_AMOUNT:
        raise InvalidAmountError(value=str(value))
    if amount != amount.quantize(CENT):
        raise InvalidAmountError(value=str(value), reason="more_than_two_decimals")
    return amount.quantize(CENT)


def lock_accounts(session: Session, account_ids: Iterable[str]) -> dict[str, Account]:
    """Load accounts with FOR UPDATE (PostgreSQL) in id order, refreshing any stale copies in the session."""
    ids = sorted(set(account_ids))
    rows = session.execute(
        select(Account)
        .where(Account.id.in_(ids))
        .order_by(Account.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalars()
    return {account.id: account for account in rows}


@dataclass(frozen=True)
class Leg:
    account: Account
    amount: Decimal
    description: str
    counterparty: str | None = None


def available(account: Account) -> Decimal:
    if account.kind == "credit":
        return (account.credit_limit or Decimal("0.00")) + account.balance
    return account.balance


def post(
    session: Session,
    *,
    kind: str,
    description: str,
    legs: Sequence[Leg],
    created_at: dt.datetime,
    check_funds: bool = True,
) -> Journal:
    """Post one balanced journal. Accounts must already be locked by the caller (see lock_accounts).

    The balance update is a compare-and-set on the value we read, so even a caller that forgot the lock
    cannot silently lose an update: it gets ConcurrencyError and its unit of work rolls back.
    """
    if sum((leg.amount for leg in legs), Decimal("0.00")) != 0:
        raise ValueError(f"unbalanced journal: {[(leg.account.id, leg.amount) for leg in legs]}")
    journal = Journal(created_at=created_at, kind=kind, description=description)
    session.add(journal)
    session.flush()
    for leg in legs:
        account = leg.account
        old_balance = account.balance
        new_balance = (old_balance + leg.amount).quantize(CENT)
        if check_funds and leg.amount < 0 and account.kind != "internal" and available(account) + leg.amount < 0:
            raise TransferRejected("insufficient_funds", account_id=account.id)
        result = session.execute(
            update(Account)
            .where(Account.id == account.id, Account.balance == old_balance)
            .values(balance=new_balance)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise ConcurrencyError(account_id=account.id)
        set_committed_value(account, "balance", new_balance)
        session.add(
            LedgerEntry(
                journal_id=journal.id,
                account_id=account.id,
                amount=leg.amount.quantize(CENT),
                balance_after=new_balance,
                created_at=created_at,
                description=leg.description,
                counterparty=leg.counterparty,
            )
        )
    session.flush()
    return journal
