"""Helpers shared by the core tests: the fixed clock and the ledger invariants."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from bankcore.models import Account, LedgerEntry

# A fixed clock: Friday 2026-11-20 10:00 in Beijing.
NOW = dt.datetime(2026, 11, 20, 2, 0, tzinfo=dt.UTC)


def assert_ledger_consistent(session: Session) -> None:
    """Every journal sums to zero, each entry's balance_after is the running sum, balances match."""
    journals: dict[int, Decimal] = defaultdict(Decimal)
    running: dict[str, Decimal] = defaultdict(Decimal)
    for entry in session.scalars(select(LedgerEntry).order_by(LedgerEntry.id)):
        journals[entry.journal_id] += entry.amount
        running[entry.account_id] += entry.amount
        assert entry.balance_after == running[entry.account_id], (entry.id, entry.account_id)
    assert all(total == 0 for total in journals.values()), {j: t for j, t in journals.items() if t}
    accounts = session.scalars(select(Account)).all()
    for account in accounts:
        assert account.balance == running[account.id], account.id
    assert sum((a.balance for a in accounts), Decimal("0")) == 0


def clear_risk(session: Session, customer_id: str, transfer_id: str, now: dt.datetime) -> str:
    """Run the real risk assessment under the shipped rules and, as the dialogue would after the customer
    acknowledged a warning and typed the PIN, satisfy what it asks; returns the decision's action."""
    from bankcore import transfers
    from bankcore.risk import store
    from bankcore.risk.config import DEFAULT_RULES_PATH
    from bankcore.risk.gather import SessionContext
    from bankcore.risk.service import RiskService

    existing = store.latest(session, transfer_id)
    if existing is not None:  # assessed already (a code being re-sent)
        return existing.action
    service = RiskService(DEFAULT_RULES_PATH, None)
    outcome = transfers.assess_risk(session, service, customer_id, transfer_id, SessionContext("webchat"), now)
    if outcome.decision.action == "warn":
        transfers.acknowledge_warning(session, customer_id, transfer_id, now)
    if outcome.decision.needs_step_up:
        store.mark_stepped_up(session, transfer_id, now)
    return outcome.decision.action
