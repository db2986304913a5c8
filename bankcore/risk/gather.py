"""Live signals: a RiskInput read from the shared database and the conversation, before money moves."""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Text, cast, func, select
from sqlalchemy.orm import Session

from bankcore.events import Event, public_channel
from bankcore.models import ChannelIdentity, CrossChannelEvent, Customer, Payee, Transfer, VerificationChallenge
from bankcore.risk import store
from bankcore.risk.signals import EVENT_DAYS, HISTORY_DAYS, PastTransfer, RiskInput, payee_key

# Outgoing transfers that count as the customer's history (executed, or authorised and about to be).
_HISTORY_STATUSES = ("completed", "authorized")
# Events read per assessment: a week of a very active customer; beyond that the oldest are dropped.
MAX_EVENTS = 500
_DIGITS = re.compile(r"\D")


@dataclass(frozen=True)
class SessionContext:
    """What the channel knows about the session the request came from (set by the gateway)."""

    channel: str  # gateway channel name (webchat, wecom, miniprogram, ivr, ...)
    input_mode: str = "text"
    device_id: str | None = None
    caller_id: str | None = None
    # The customer's messages in this conversation, oldest first (secrets already removed by the gateway).
    utterances: tuple[str, ...] = ()


def _history(
    session: Session, customer_id: str, now: dt.datetime, exclude_id: str | None
) -> tuple[tuple[PastTransfer, ...], frozenset[str]]:
    when = func.coalesce(Transfer.executed_at, Transfer.authorized_at, Transfer.created_at)
    since = now - dt.timedelta(days=HISTORY_DAYS)
    keys = {
        payee_id: payee_key(bank, last4, name)
        for payee_id, bank, last4, name in session.execute(
            select(Payee.id, Payee.bank_name, Payee.account_last4, Payee.name).where(Payee.customer_id == customer_id)
        )
    }
    query = select(when, Transfer.amount, Transfer.payee_id, Transfer.id).where(
        Transfer.customer_id == customer_id, Transfer.status.in_(_HISTORY_STATUSES), when <= now
    )
    recent: list[PastTransfer] = []
    older: set[str] = set()
    for ts, amount, payee_id, transfer_id in session.execute(query):
        if transfer_id == exclude_id or payee_id not in keys:
            continue
        if ts >= since:
            recent.append(PastTransfer(ts=ts, amount=amount, payee_key=keys[payee_id]))
        else:
            older.add(keys[payee_id])
    recent.sort(key=lambda p: p.ts)
    return tuple(recent), frozenset(older)


def _failed_verifications(session: Session, customer_id: str, now: dt.datetime) -> int:
    total = session.scalar(
        select(func.coalesce(func.sum(VerificationChallenge.attempts), 0)).where(
            VerificationChallenge.customer_id == customer_id,
            VerificationChallenge.created_at >= now - dt.timedelta(hours=24),
        )
    )
    return int(total or 0)


def _number(text: str) -> str:
    digits = _DIGITS.sub("", text)
    return digits[-11:]


def _caller_mismatch(session: Session, customer: Customer, caller_id: str | None) -> bool:
    if not caller_id or not _number(caller_id):
        return False
    known = {_number(customer.phone or "")}
    known.update(
        _number(external)
        for external in session.scalars(
            select(ChannelIdentity.external_id).where(
                ChannelIdentity.customer_id == customer.id, ChannelIdentity.channel == "phone"
            )
        )
    )
    return _number(caller_id) not in known


def _recent_events(session: Session, customer_id: str, now: dt.datetime) -> tuple[Event, ...]:
    """The last EVENT_DAYS of events, newest MAX_EVENTS, oldest first; attributes are not read (the
    features use type, time and channel), which keeps this one indexed read cheap."""
    rows = session.execute(
        select(CrossChannelEvent.ts, CrossChannelEvent.channel, CrossChannelEvent.type)
        .where(
            CrossChannelEvent.customer_id == customer_id,
            CrossChannelEvent.ts <= now,
            CrossChannelEvent.ts >= now - dt.timedelta(days=EVENT_DAYS),
        )
        .order_by(CrossChannelEvent.ts.desc(), CrossChannelEvent.id.desc())
        .limit(MAX_EVENTS)
    ).all()
    return tuple(Event(customer_id, ts, channel, event_type) for ts, channel, event_type in reversed(rows))


def _device_seen(session: Session, customer_id: str, device_id: str, now: dt.datetime) -> bool | None:
    """Whether an event of the last HISTORY_DAYS carried this device id (None: no event carries any).

    The JSON text is searched for the quoted id first (portable across SQLite and PostgreSQL), and the
    few candidate rows are then checked field by field.
    """
    since = now - dt.timedelta(days=HISTORY_DAYS)
    scope = (
        CrossChannelEvent.customer_id == customer_id,
        CrossChannelEvent.ts <= now,
        CrossChannelEvent.ts >= since,
    )
    text = cast(CrossChannelEvent.attrs, Text)
    candidates = session.scalars(
        select(CrossChannelEvent.attrs).where(*scope, text.contains(json.dumps(device_id)[1:-1])).limit(20)
    )
    if any(isinstance(attrs, dict) and attrs.get("device_id") == device_id for attrs in candidates):
        return True
    any_device = session.scalar(select(CrossChannelEvent.id).where(*scope, text.contains('"device_id"')).limit(1))
    return False if any_device is not None else None


def gather(
    session: Session,
    *,
    kind: str,
    customer: Customer,
    amount: Decimal,
    currency: str,
    payee: Payee | None,
    context: SessionContext,
    now: dt.datetime,
    exclude_transfer_id: str | None = None,
) -> RiskInput:
    history, older = _history(session, customer.id, now, exclude_transfer_id)
    events = _recent_events(session, customer.id, now)
    key = payee_key(payee.bank_name, payee.account_last4, payee.name) if payee is not None else None
    device_known: bool | None = None
    if context.device_id:
        device_known = _device_seen(session, customer.id, context.device_id, now)
    return RiskInput(
        kind=kind,
        customer_id=customer.id,
        ts=now,
        amount=amount,
        currency=currency,
        payee_key=key,
        payee_on_fraud_list=store.on_watchlist(session, "payee", key),
        cross_border=payee is not None and (payee.country or "CN") != "CN",
        channel=public_channel(context.channel),
        input_mode=context.input_mode,
        device_id=context.device_id,
        device_known=device_known,
        caller_id_mismatch=_caller_mismatch(session, customer, context.caller_id),
        failed_verifications_24h=_failed_verifications(session, customer.id, now),
        utterances=context.utterances,
        timezone=customer.timezone,
        history=history,
        events=events,
        older_payees=older,
    )
