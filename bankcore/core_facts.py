"""Core-banking facts of the sandbox bank (failed transfers, cards expiring, bills due) as channel-"core" events.

The vocabulary is shared with the foresight simulator and model:

- `transfer_failed`      attrs: amount, reason                  ts: when the transfer failed
- `card_expiring`        attrs: days_left, card_kind            ts: the start of the bank's local day it was seen
- `credit_card_due`      attrs: amount, minimum, days_left      ts: idem
- `loan_instalment_due`  attrs: amount, days_left               ts: idem
- `deposit_maturing`     attrs: amount, days_left               ts: idem

Amounts are plain numbers (float, yuan). A "due/expiring" fact is stamped at the start of the bank's local day
(Asia/Shanghai, in UTC) on which it is first seen: it was already true then, so a contact later that day may
see it, and a contact earlier that day could not have been caused by it anyway (it would not be strictly
before). `days_left` counts from that day, so `ts + days_left` is always the due date; a reader wanting the
days left at some later moment subtracts the days elapsed since `ts`.

Every fact has a deterministic `event_id` naming the object and, for due facts, its due date (one event per
statement, instalment, expiry or maturity): running `record_core_facts` again, daily or at every start, stores
nothing twice.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from bankcore.event_store import StoreReport, store_events
from bankcore.events import MAX_ID_CHARS, Event
from bankcore.models import Account, Card, Deposit, Loan, LoanInstalment, Transfer
from bankcore.sandbox import BANK_ZONE

UTC = dt.UTC
CORE_CHANNEL = "core"

# How far ahead each kind of fact is worth knowing about (days), and how far back failed transfers count.
CARD_EXPIRY_WINDOW_DAYS = 60
CREDIT_CARD_DUE_WINDOW_DAYS = 20
LOAN_INSTALMENT_WINDOW_DAYS = 15
DEPOSIT_MATURITY_WINDOW_DAYS = 30
FAILED_TRANSFER_LOOKBACK = dt.timedelta(days=90)

# Cards a customer still holds: a lost or replaced card expiring is not news.
HELD_CARD_STATUSES = ("active", "inactive", "frozen")


def _amount(value: Decimal | None) -> float:
    return float(value) if value is not None else 0.0


def _fact_id(fact_type: str, *parts: str) -> str:
    text = ":".join(("core", fact_type, *parts))
    if len(text) <= MAX_ID_CHARS:
        return text
    # Long object ids: keep the id deterministic and within the column.
    digest = hashlib.sha256(text.encode()).hexdigest()[:32]
    return f"core:{fact_type}:{digest}"[:MAX_ID_CHARS]


def _compact(day: dt.date) -> str:
    return day.strftime("%Y%m%d")


def local_day_start(now: dt.datetime) -> tuple[dt.date, dt.datetime]:
    """The bank's local date at `now` and the UTC instant that date began."""
    today = now.astimezone(BANK_ZONE).date()
    start = dt.datetime.combine(today, dt.time(0), tzinfo=BANK_ZONE).astimezone(UTC)
    return today, start


def core_fact_events(session: Session, now: dt.datetime) -> list[Event]:
    """The core-banking facts true at `now`, as events with deterministic ids (see the module docstring)."""
    today, day_start = local_day_start(now)
    events: list[Event] = []

    def due_fact(customer_id: str, fact_type: str, object_id: str, due: dt.date, **attrs: object) -> Event:
        return Event(
            customer_id=customer_id,
            ts=day_start,
            channel=CORE_CHANNEL,
            type=fact_type,
            attrs={**attrs, "days_left": (due - today).days},
            event_id=_fact_id(fact_type, object_id, _compact(due)),
        )

    failed = session.scalars(
        select(Transfer)
        .where(Transfer.status == "failed", Transfer.updated_at >= now - FAILED_TRANSFER_LOOKBACK)
        .order_by(Transfer.updated_at, Transfer.id)
    )
    for transfer in failed:
        if transfer.updated_at > now:
            continue
        events.append(
            Event(
                customer_id=transfer.customer_id,
                ts=transfer.updated_at,
                channel=CORE_CHANNEL,
                type="transfer_failed",
                attrs={"amount": _amount(transfer.amount), "reason": transfer.failure_reason or "unknown"},
                event_id=_fact_id("transfer_failed", transfer.id),
            )
        )

    cards = session.scalars(
        select(Card)
        .where(
            Card.status.in_(HELD_CARD_STATUSES),
            Card.expiry >= today,
            Card.expiry <= today + dt.timedelta(days=CARD_EXPIRY_WINDOW_DAYS),
        )
        .order_by(Card.id)
    )
    for card in cards:
        events.append(due_fact(card.customer_id, "card_expiring", card.id, card.expiry, card_kind=card.kind))

    statements = session.scalars(
        select(Account)
        .where(
            Account.kind == "credit",
            Account.status != "closed",
            Account.customer_id.is_not(None),
            Account.statement_balance > 0,
            Account.statement_due_date >= today,
            Account.statement_due_date <= today + dt.timedelta(days=CREDIT_CARD_DUE_WINDOW_DAYS),
        )
        .order_by(Account.id)
    )
    for account in statements:
        assert account.customer_id is not None and account.statement_due_date is not None
        events.append(
            due_fact(
                account.customer_id,
                "credit_card_due",
                account.id,
                account.statement_due_date,
                amount=_amount(account.statement_balance),
                minimum=_amount(account.minimum_payment),
            )
        )

    instalments = session.execute(
        select(LoanInstalment, Loan.customer_id)
        .join(Loan, Loan.id == LoanInstalment.loan_id)
        .where(
            Loan.status == "active",
            LoanInstalment.status == "due",
            LoanInstalment.due_date >= today,
            LoanInstalment.due_date <= today + dt.timedelta(days=LOAN_INSTALMENT_WINDOW_DAYS),
        )
        .order_by(LoanInstalment.loan_id, LoanInstalment.seq)
    )
    for instalment, customer_id in instalments:
        events.append(
            due_fact(
                customer_id,
                "loan_instalment_due",
                f"{instalment.loan_id}:{instalment.seq}",
                instalment.due_date,
                amount=_amount(instalment.amount),
            )
        )

    deposits = session.scalars(
        select(Deposit)
        .where(
            Deposit.status == "active",
            Deposit.maturity_date >= today,
            Deposit.maturity_date <= today + dt.timedelta(days=DEPOSIT_MATURITY_WINDOW_DAYS),
        )
        .order_by(Deposit.id)
    )
    for deposit in deposits:
        events.append(
            due_fact(
                deposit.customer_id,
                "deposit_maturing",
                deposit.id,
                deposit.maturity_date,
                amount=_amount(deposit.amount),
            )
        )
    return events


def record_core_facts(session: Session, now: dt.datetime) -> StoreReport:
    """Store today's core facts; facts already stored (same event_id) count as duplicates."""
    return store_events(session, core_fact_events(session, now))
