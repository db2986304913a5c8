"""Transaction history: ledger entries of a customer's accounts, newest first."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from bankcore.models import Account, LedgerEntry


@dataclass(frozen=True)
class EntryView:
    id: int
    journal_id: int
    account_id: str
    account_name: str
    account_last4: str | None
    created_at: dt.datetime
    amount: Decimal  # + money in, - money out
    balance_after: Decimal
    description: str
    counterparty: str | None


def recent_entries(
    session: Session,
    customer_id: str,
    *,
    account_id: str | None = None,
    limit: int = 5,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> list[EntryView]:
    """Entries newest first; `since` is inclusive and `until` exclusive (UTC-aware datetimes)."""
    query = (
        select(LedgerEntry, Account)
        .join(Account, Account.id == LedgerEntry.account_id)
        .where(Account.customer_id == customer_id)
    )
    if account_id is not None:
        query = query.where(LedgerEntry.account_id == account_id)
    if since is not None:
        query = query.where(LedgerEntry.created_at >= since)
    if until is not None:
        query = query.where(LedgerEntry.created_at < until)
    query = query.order_by(LedgerEntry.created_at.desc(), LedgerEntry.id.desc()).limit(max(0, limit))
    return [
        EntryView(
            id=entry.id,
            journal_id=entry.journal_id,
            account_id=account.id,
            account_name=account.name,
            account_last4=account.last4,
            created_at=entry.created_at,
            amount=entry.amount,
            balance_after=entry.balance_after,
            description=entry.description,
            counterparty=entry.counterparty,
        )
        for entry, account in session.execute(query)
    ]
