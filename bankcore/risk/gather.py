"""Live signals: a RiskInput read from the shared database and the conversation, before money moves."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bankcore.event_store import events_before
from bankcore.events import public_channel
from bankcore.models import ChannelIdentity, Customer, Payee, Transfer, VerificationChallenge
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
    query = (
        select(when, Transfer.amount, Payee.bank_name, Payee.account_last4, Payee.name, Transfer.id)
        .join(Payee, Payee.id == Transfer.payee_id)
        .where(Transfer.customer_id == customer_id, Transfer.status.in_(_HISTORY_STATUSES), when <= now)
    )
    recent: list[PastTransfer] = []
    older: set[str] = set()
    for ts, amount, bank, last4, name, transfer_id in session.execute(query):
        if transfer_id == exclude_id:
            continue
        key = payee_key(bank, last4, name)
        if ts >= since:
            recent.append(PastTransfer(ts=ts, amount=Decimal(amount), payee_key=key))
        else:
            older.add(key)
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
    # One read of the history window: devices seen over 90 days, signals from the last EVENT_DAYS.
    recent_events = events_before(
        session,
        customer.id,
        now + dt.timedelta(microseconds=1),
        max_events=MAX_EVENTS,
        lookback=dt.timedelta(days=HISTORY_DAYS),
    )
    events = tuple(e for e in recent_events if e.ts >= now - dt.timedelta(days=EVENT_DAYS))
    key = payee_key(payee.bank_name, payee.account_last4, payee.name) if payee is not None else None
    device_known: bool | None = None
    if context.device_id:
        seen = {str(e.attrs.get("device_id")) for e in recent_events if e.attrs.get("device_id")}
        device_known = context.device_id in seen if seen else None
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
