"""Live signals: a RiskInput read from the shared database and the conversation, before money moves."""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Float, Text, case, cast, func, select, type_coerce
from sqlalchemy.orm import Session

from bankcore.events import public_channel
from bankcore.models import ChannelIdentity, CrossChannelEvent, Customer, Payee, Transfer, VerificationChallenge
from bankcore.risk import store
from bankcore.risk.signals import EVENT_DAYS, HISTORY_DAYS, EventCount, PastTransfer, RiskInput, payee_key

# Outgoing transfers that count as the customer's history (executed, or authorised and about to be).
_HISTORY_STATUSES = ("completed", "authorized")
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
    counted = (Transfer.customer_id == customer_id, Transfer.status.in_(_HISTORY_STATUSES))
    payee_columns = (Payee.bank_name, Payee.account_last4, Payee.name)
    keys: dict[str, str] = {}
    recent: list[PastTransfer] = []
    for ts, amount, payee_id, transfer_id, bank, last4, name in session.execute(
        # The amount as a plain number: features are floats, and skipping the exact-decimal conversion of
        # every row keeps a busy customer's 90 days cheap to read.
        select(when, type_coerce(Transfer.amount, Float), Transfer.payee_id, Transfer.id, *payee_columns)
        .join(Payee, Payee.id == Transfer.payee_id)
        .where(*counted, when <= now, when >= since)
    ):
        if transfer_id == exclude_id:
            continue
        key = keys.get(payee_id)
        if key is None:
            key = keys[payee_id] = payee_key(bank, last4, name)
        recent.append(PastTransfer(ts=ts, amount=Decimal(str(amount)), payee_key=key))
    older = {
        payee_key(bank, last4, name)
        for bank, last4, name in session.execute(
            select(*payee_columns)
            .join(Transfer, Transfer.payee_id == Payee.id)
            .where(*counted, when < since)
            .distinct()
        )
    }
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


def _event_counts(session: Session, customer_id: str, now: dt.datetime) -> tuple[EventCount, ...]:
    """The last 7 days of events counted per (type, channel) and window in one indexed, grouped read: the
    cost does not grow with how busy the customer was."""
    hour_ago, day_ago = now - dt.timedelta(hours=1), now - dt.timedelta(hours=24)
    ts = CrossChannelEvent.ts
    rows = session.execute(
        select(
            CrossChannelEvent.type,
            CrossChannelEvent.channel,
            func.sum(case((ts > hour_ago, 1), else_=0)),
            func.sum(case((ts > day_ago, 1), else_=0)),
            func.count(),
            func.max(ts),
        )
        .where(
            CrossChannelEvent.customer_id == customer_id,
            ts <= now,
            ts > now - dt.timedelta(days=EVENT_DAYS),
        )
        .group_by(CrossChannelEvent.type, CrossChannelEvent.channel)
        .order_by(CrossChannelEvent.type, CrossChannelEvent.channel)
    ).all()
    return tuple(
        EventCount(event_type, channel, int(n_1h or 0), int(n_24h or 0), int(n_7d), _aware(latest))
        for event_type, channel, n_1h, n_24h, n_7d, latest in rows
    )


def _aware(value: dt.datetime | str) -> dt.datetime:
    """max() over a timestamp column: some drivers return the stored text rather than the column type."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


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
    event_counts = _event_counts(session, customer.id, now)
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
        event_counts=event_counts,
        older_payees=older,
    )
