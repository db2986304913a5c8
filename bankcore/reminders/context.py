"""Reads what the dispatch policy needs about a reminder's customer from the database (a CustomerContext).

Reachable channels: `phone` and `sms` when the customer has a phone number; `wecom` with a bound WeChat Work
identity; `miniprogram` with a bound mini-program openid (subscribe messages are addressed by openid);
`webchat` always (the message waits in the customer's web chat inbox).

Settled (the reminder is moot, the worker cancels it), by kind:
- loan_instalment_due: the instalment is paid, gone, or its loan is no longer active;
- card_statement_due: the account is closed, its statement balance is paid down to zero, or its due date
  moved (a new statement: that one gets its own reminders);
- card_expiring: the card is no longer held (lost, replaced, ...) or its expiry changed;
- deposit_maturing: the deposit is no longer active or its maturity date changed;
- auto_debit_failed: an `auto_debit_succeeded` event for the same item followed the failure;
- service_notice: never settled by the bank's data;
and for every kind, once the customer's local day is past the due date (by AUTO_DEBIT_GRACE for failed
auto-debits, which are about the past already) a reminder of it is no longer sent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from bankcore.core_facts import HELD_CARD_STATUSES
from bankcore.models import (
    Account,
    Card,
    ChannelIdentity,
    Customer,
    Deposit,
    Loan,
    LoanInstalment,
    OptOut,
    SubscriptionConsent,
)
from bankcore.reminders import store
from bankcore.reminders.planner import auto_debit_recovered
from bankcore.reminders.policy import DEFAULT_ZONE, CustomerContext, zone_of

# Identity channel (bankcore.customers.IDENTITY_CHANNELS) → the outbound channel it makes reachable.
IDENTITY_REACH = {"wecom": "wecom", "miniprogram_openid": "miniprogram"}
# Outbound channels in a fixed order, so a context reads the same however the rows came back.
CHANNEL_ORDER = ("wecom", "miniprogram", "phone", "sms", "webchat")
AUTO_DEBIT_GRACE = dt.timedelta(days=3)


class StoredReminder(Protocol):
    """What the context reads of a stored reminder."""

    @property
    def customer_id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def item_id(self) -> str: ...
    @property
    def due_date(self) -> dt.date: ...
    @property
    def payload(self) -> Mapping[str, Any]: ...


def reachable_channels(session: Session, customer: Customer) -> tuple[str, ...]:
    reachable = {"webchat"}
    if customer.phone:
        reachable |= {"phone", "sms"}
    bound = session.scalars(select(ChannelIdentity.channel).where(ChannelIdentity.customer_id == customer.id))
    reachable |= {IDENTITY_REACH[channel] for channel in bound if channel in IDENTITY_REACH}
    if "miniprogram" in reachable and not _has_subscription_consent(session, customer.id):
        # A subscribe message needs an unused acceptance of its template (订阅消息): none, no channel.
        reachable.discard("miniprogram")
    return tuple(channel for channel in CHANNEL_ORDER if channel in reachable)


def _has_subscription_consent(session: Session, customer_id: str) -> bool:
    openids = select(ChannelIdentity.external_id).where(
        ChannelIdentity.customer_id == customer_id, ChannelIdentity.channel == "miniprogram_openid"
    )
    return (
        session.scalar(
            select(SubscriptionConsent.id)
            .where(SubscriptionConsent.openid.in_(openids), SubscriptionConsent.remaining > 0)
            .limit(1)
        )
        is not None
    )


def _settled(session: Session, reminder: StoredReminder, today: dt.date) -> bool:
    kind, item_id, due = reminder.kind, reminder.item_id, reminder.due_date
    if kind == "auto_debit_failed":
        if today > due + AUTO_DEBIT_GRACE:
            return True
        failed_at = dt.datetime.fromisoformat(str(reminder.payload["failed_at"]))
        debit_item = reminder.payload.get("debit_item_id")
        return auto_debit_recovered(session, reminder.customer_id, debit_item, failed_at)
    if today > due:
        return True
    if kind == "loan_instalment_due":
        loan_id, _, seq = item_id.rpartition(":")
        if not seq.isdecimal():
            return True  # not an instalment this bank knows
        row = session.execute(
            select(LoanInstalment.status, Loan.status)
            .join(Loan, Loan.id == LoanInstalment.loan_id)
            .where(LoanInstalment.loan_id == loan_id, LoanInstalment.seq == int(seq))
        ).first()
        return row is None or row[0] != "due" or row[1] != "active"
    if kind == "card_statement_due":
        account = session.get(Account, item_id)
        return (
            account is None
            or account.status == "closed"
            or (account.statement_balance or 0) <= 0
            or account.statement_due_date != due
        )
    if kind == "card_expiring":
        card = session.get(Card, item_id)
        return card is None or card.status not in HELD_CARD_STATUSES or card.expiry != due
    if kind == "deposit_maturing":
        deposit = session.get(Deposit, item_id)
        return deposit is None or deposit.status != "active" or deposit.maturity_date != due
    return False


def gather_context(
    session: Session, reminder: StoredReminder, now: dt.datetime, *, cap_window: dt.timedelta
) -> CustomerContext:
    """The customer's context for deciding on `reminder` at `now`; sends are read back `cap_window` far."""
    customer = session.get(Customer, reminder.customer_id)
    if customer is None:
        # Nobody to reach: the policy suppresses it as unreachable rather than the worker failing.
        return CustomerContext(reminder.customer_id, DEFAULT_ZONE, (), frozenset(), (), False)
    zone = zone_of(customer.timezone)
    opted_out = frozenset(
        (topic, channel)
        for topic, channel in session.execute(
            select(OptOut.topic, OptOut.channel).where(OptOut.customer_id == customer.id)
        )
    )
    recent = store.recent_deliveries(session, customer.id, now - cap_window)
    return CustomerContext(
        customer_id=customer.id,
        timezone=zone.key,
        reachable=reachable_channels(session, customer),
        opted_out=opted_out,
        recent_sends=tuple((channel, sent_at) for channel, sent_at in recent),
        settled=_settled(session, reminder, now.astimezone(zone).date()),
    )
