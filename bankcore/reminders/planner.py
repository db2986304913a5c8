"""Plans reminders from what is due in the sandbox bank and from cross-channel events, per the rules file.

For each enabled rule and each due item within reach, one `PlannedReminder` per offset: `send_after` is
(due date - offset days) at the rule's `send_at` in the customer's time zone, in UTC. A send day earlier than
the customer's today is skipped (that reminder's moment is gone); one earlier today is kept and goes out as
soon as the policy allows. The key names customer, rule, item, due date and offset, so planning again (daily,
at every start) proposes the same keys and the store keeps each reminder once.

What is due (the selection follows bankcore.core_facts):
- loan_instalment_due: instalments with status `due` of active loans;
- card_statement_due: open credit accounts with a statement balance above zero and a statement due date;
- card_expiring: cards the customer still holds (core_facts.HELD_CARD_STATUSES) by expiry date;
- deposit_maturing: active deposits by maturity date;
- auto_debit_failed: cross-channel events of type `auto_debit_failed` (any channel, usually `core`, sent by
  the core system through POST /events) with attrs {item_id, item_name, amount, reason}; the due date is the
  customer's local day of the failure and the reminder may go at once (offset 0). One later
  `auto_debit_succeeded` event for the same customer and attrs.item_id settles it;
- service_notice: the rule's own notice (id, date, text), for every customer, or only those whose
  customer profile (CustomerProfile.attrs) has `service_notice_opt_in: true` when `opt_in_required`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from bankcore.core_facts import HELD_CARD_STATUSES
from bankcore.models import Account, Card, CrossChannelEvent, Customer, CustomerProfile, Deposit, Loan, LoanInstalment
from bankcore.reminders import store
from bankcore.reminders.planned import PlannedReminder
from bankcore.reminders.policy import zone_of
from bankcore.reminders.rules import ReminderRules, Rule
from bankcore.sandbox import BANK_ZONE

UTC = dt.UTC
CENT = Decimal("0.01")

AUTO_DEBIT_FAILED_EVENT = "auto_debit_failed"
AUTO_DEBIT_SUCCEEDED_EVENT = "auto_debit_succeeded"
SERVICE_NOTICE_OPT_IN_ATTR = "service_notice_opt_in"
# A failed auto-debit older than this is not reminded of any more: the next cycle's reminders take over.
AUTO_DEBIT_LOOKBACK = dt.timedelta(days=1)
DEFAULT_HORIZON_DAYS = 35


@dataclass(frozen=True)
class _CustomerInfo:
    zone: ZoneInfo
    salutation: str  # 王先生: how a reminder addresses the customer


@dataclass(frozen=True)
class _DueItem:
    customer_id: str
    item_id: str
    due_date: dt.date
    amount: Decimal | None
    payload: dict[str, Any]
    # Event-driven items go out from this moment (UTC) instead of at send_at on the send day.
    seen_at: dt.datetime | None = None


def _money(value: Decimal | None) -> str:
    return str((value or Decimal(0)).quantize(CENT))


def _event_amount(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value)).quantize(CENT) if value is not None else None
    except InvalidOperation:
        return None


def _customers(session: Session) -> dict[str, _CustomerInfo]:
    rows = session.execute(select(Customer.id, Customer.timezone, Customer.surname, Customer.title))
    return {cid: _CustomerInfo(zone_of(tz or ""), f"{surname}{title}") for cid, tz, surname, title in rows}


def _loan_instalments(session: Session, low: dt.date, high: dt.date) -> Iterator[_DueItem]:
    rows = session.execute(
        select(LoanInstalment, Loan.customer_id, Loan.name)
        .join(Loan, Loan.id == LoanInstalment.loan_id)
        .where(
            Loan.status == "active",
            LoanInstalment.status == "due",
            LoanInstalment.due_date >= low,
            LoanInstalment.due_date <= high,
        )
        .order_by(LoanInstalment.loan_id, LoanInstalment.seq)
    )
    for instalment, customer_id, loan_name in rows:
        yield _DueItem(
            customer_id,
            f"{instalment.loan_id}:{instalment.seq}",
            instalment.due_date,
            instalment.amount,
            {"loan_name": loan_name, "instalment_seq": instalment.seq, "amount": _money(instalment.amount)},
        )


def _card_statements(session: Session, low: dt.date, high: dt.date) -> Iterator[_DueItem]:
    accounts = session.scalars(
        select(Account)
        .where(
            Account.kind == "credit",
            Account.status != "closed",
            Account.customer_id.is_not(None),
            Account.statement_balance > 0,
            Account.statement_due_date >= low,
            Account.statement_due_date <= high,
        )
        .order_by(Account.id)
    )
    for account in accounts:
        assert account.customer_id is not None and account.statement_due_date is not None
        yield _DueItem(
            account.customer_id,
            account.id,
            account.statement_due_date,
            account.statement_balance,
            {
                "card_name": account.name,
                "last4": account.last4 or "",
                "amount": _money(account.statement_balance),
                "minimum_payment": _money(account.minimum_payment),
            },
        )


def _cards_expiring(session: Session, low: dt.date, high: dt.date) -> Iterator[_DueItem]:
    cards = session.scalars(
        select(Card)
        .where(Card.status.in_(HELD_CARD_STATUSES), Card.expiry >= low, Card.expiry <= high)
        .order_by(Card.id)
    )
    for card in cards:
        yield _DueItem(card.customer_id, card.id, card.expiry, None, {"last4": card.last4, "card_kind": card.kind})


def _deposits_maturing(session: Session, low: dt.date, high: dt.date) -> Iterator[_DueItem]:
    deposits = session.scalars(
        select(Deposit)
        .where(Deposit.status == "active", Deposit.maturity_date >= low, Deposit.maturity_date <= high)
        .order_by(Deposit.id)
    )
    for deposit in deposits:
        yield _DueItem(
            deposit.customer_id,
            deposit.id,
            deposit.maturity_date,
            deposit.amount,
            {"deposit_name": deposit.name, "amount": _money(deposit.amount), "auto_renew": deposit.auto_renew},
        )


def auto_debit_recovered(session: Session, customer_id: str, item_id: str | None, failed_at: dt.datetime) -> bool:
    """True when an `auto_debit_succeeded` event for the same customer (and item, when known) followed."""
    rows = session.scalars(
        select(CrossChannelEvent.attrs).where(
            CrossChannelEvent.customer_id == customer_id,
            CrossChannelEvent.type == AUTO_DEBIT_SUCCEEDED_EVENT,
            CrossChannelEvent.ts > failed_at,
        )
    )
    return any(item_id is None or (attrs or {}).get("item_id") in (None, item_id) for attrs in rows)


def _auto_debit_failures(session: Session, customers: dict[str, _CustomerInfo], now: dt.datetime) -> Iterator[_DueItem]:
    events = session.scalars(
        select(CrossChannelEvent)
        .where(
            CrossChannelEvent.type == AUTO_DEBIT_FAILED_EVENT,
            CrossChannelEvent.ts >= now - AUTO_DEBIT_LOOKBACK,
            CrossChannelEvent.ts <= now,
        )
        .order_by(CrossChannelEvent.ts, CrossChannelEvent.id)
    )
    for event in events:
        info = customers.get(event.customer_id)
        if info is None:
            continue  # events may name customers the bank does not hold; nobody to remind
        attrs = event.attrs or {}
        debit_item = attrs.get("item_id")
        debit_item = str(debit_item) if debit_item is not None else None
        if auto_debit_recovered(session, event.customer_id, debit_item, event.ts):
            continue
        amount = _event_amount(attrs.get("amount"))
        payload: dict[str, Any] = {"amount": _money(amount), "failed_at": event.ts.isoformat()}
        if debit_item is not None:
            payload["debit_item_id"] = debit_item
        if attrs.get("item_name"):
            payload["item_name"] = str(attrs["item_name"])[:64]
        yield _DueItem(
            event.customer_id,
            event.event_id or f"event-{event.id}",
            event.ts.astimezone(info.zone).date(),
            amount,
            payload,
            seen_at=event.ts,
        )


def _service_notices(session: Session, rule: Rule, customers: dict[str, _CustomerInfo]) -> Iterator[_DueItem]:
    assert rule.notice is not None  # the schema requires it for service_notice rules
    if rule.opt_in_required:
        profiles = session.execute(select(CustomerProfile.customer_id, CustomerProfile.attrs))
        audience = sorted(cid for cid, attrs in profiles if (attrs or {}).get(SERVICE_NOTICE_OPT_IN_ATTR) is True)
    else:
        audience = sorted(customers)
    for customer_id in audience:
        yield _DueItem(
            customer_id,
            rule.notice.id,
            rule.notice.date,
            None,
            {"notice_id": rule.notice.id, "text": rule.notice.text},
        )


def _due_items(
    session: Session, rule: Rule, customers: dict[str, _CustomerInfo], now: dt.datetime, reach_days: int
) -> Iterator[_DueItem]:
    # One query for every customer: local "today" differs by at most a day across zones; each customer's
    # own window is applied afterwards.
    bank_today = now.astimezone(BANK_ZONE).date()
    low, high = bank_today - dt.timedelta(days=1), bank_today + dt.timedelta(days=reach_days + 1)
    if rule.kind == "loan_instalment_due":
        yield from _loan_instalments(session, low, high)
    elif rule.kind == "card_statement_due":
        yield from _card_statements(session, low, high)
    elif rule.kind == "card_expiring":
        yield from _cards_expiring(session, low, high)
    elif rule.kind == "deposit_maturing":
        yield from _deposits_maturing(session, low, high)
    elif rule.kind == "auto_debit_failed":
        yield from _auto_debit_failures(session, customers, now)
    elif rule.kind == "service_notice":
        yield from _service_notices(session, rule, customers)


def reminder_key(customer_id: str, rule_id: str, item_id: str, due_date: dt.date, offset: int) -> str:
    return f"{customer_id}:{rule_id}:{item_id}:{due_date.isoformat()}:T-{offset}"


def plan(
    session: Session, rules: ReminderRules, now: dt.datetime, *, horizon_days: int = DEFAULT_HORIZON_DAYS
) -> list[PlannedReminder]:
    """Every reminder the enabled rules call for at `now`, ordered by send time then key (deterministic)."""
    customers = _customers(session)
    planned: list[PlannedReminder] = []
    for rule in rules.enabled_rules:
        # Items due further out than the largest offset have no reminder yet; the horizon bounds both.
        reach_days = min(horizon_days, rule.max_offset)
        for item in _due_items(session, rule, customers, now, reach_days):
            info = customers.get(item.customer_id)
            if info is None:
                continue
            if rule.min_amount is not None and (item.amount is None or item.amount < rule.min_amount):
                continue
            today = now.astimezone(info.zone).date()
            if item.seen_at is None and not today <= item.due_date <= today + dt.timedelta(days=reach_days):
                continue
            for offset in rule.offsets_days:
                send_day = item.due_date - dt.timedelta(days=offset)
                if item.seen_at is not None:
                    send_after = item.seen_at + dt.timedelta(days=offset)
                else:
                    if send_day < today:
                        continue  # that reminder's day is gone; a later offset still goes
                    local = dt.datetime.combine(send_day, rule.send_at, tzinfo=info.zone)
                    send_after = local.astimezone(UTC)
                planned.append(
                    PlannedReminder(
                        key=reminder_key(item.customer_id, rule.id, item.item_id, item.due_date, offset),
                        customer_id=item.customer_id,
                        rule_id=rule.id,
                        kind=rule.kind,
                        topic=rule.opt_out_topic,
                        item_id=item.item_id,
                        due_date=item.due_date,
                        send_after=send_after,
                        channels=tuple(rule.channels),
                        payload={
                            "salutation": info.salutation,
                            "due_date": item.due_date.isoformat(),
                            "days_before": offset,
                            **item.payload,
                        },
                    )
                )
    planned.sort(key=lambda reminder: (reminder.send_after, reminder.key))
    return planned


def plan_and_store(
    session: Session, rules: ReminderRules, now: dt.datetime, *, horizon_days: int = DEFAULT_HORIZON_DAYS
) -> tuple[int, int]:
    """Plan and hand every reminder to the durable store; (planned, newly created) — the rest already existed."""
    planned = plan(session, rules, now, horizon_days=horizon_days)
    # One bulk call: the store inserts in chunks and lets the database drop keys it already holds.
    created = store.add_planned(session, planned, now)
    return len(planned), created
