"""Human handoffs, complaints, opt-outs and fraud reports (which freeze cards and escalate)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from bankcore import cards
from bankcore.errors import BankError, NotFoundError
from bankcore.models import Card, Complaint, Customer, FraudReport, Handoff, OptOut

PRIORITIES = ("normal", "high")


@dataclass(frozen=True)
class HandoffView:
    id: int
    customer_id: str | None
    reason: str
    priority: str
    channel: str
    summary: str
    status: str
    created_at: dt.datetime


@dataclass(frozen=True)
class ComplaintView:
    id: int
    reference: str  # what the customer is told, e.g. TS00000012
    channel: str
    category: str | None
    text: str
    created_at: dt.datetime


@dataclass(frozen=True)
class OptOutView:
    customer_id: str
    topic: str
    channel: str
    created_at: dt.datetime


@dataclass(frozen=True)
class FraudReportView:
    id: int
    frozen_cards: tuple[str, ...]  # last 4 digits of the cards frozen by this report
    handoff_id: int
    created_at: dt.datetime


def _require_customer(session: Session, customer_id: str) -> None:
    if session.get(Customer, customer_id) is None:
        raise NotFoundError("customer_not_found", customer_id=customer_id)


def _handoff_view(h: Handoff) -> HandoffView:
    return HandoffView(h.id, h.customer_id, h.reason, h.priority, h.channel, h.summary, h.status, h.created_at)


def request_handoff(
    session: Session,
    customer_id: str | None,
    *,
    reason: str,
    channel: str,
    priority: str = "normal",
    summary: str = "",
    now: dt.datetime,
) -> HandoffView:
    if priority not in PRIORITIES:
        raise BankError("invalid_priority", priority=priority)
    if customer_id is not None:
        _require_customer(session, customer_id)
    handoff = Handoff(
        customer_id=customer_id,
        reason=reason,
        priority=priority,
        channel=channel,
        summary=summary[:4000],
        status="open",
        created_at=now,
    )
    session.add(handoff)
    session.flush()
    return _handoff_view(handoff)


def get_handoff(session: Session, handoff_id: int) -> HandoffView | None:
    handoff = session.get(Handoff, handoff_id)
    return _handoff_view(handoff) if handoff is not None else None


def open_handoffs(session: Session, customer_id: str | None = None) -> list[HandoffView]:
    """High priority first, then oldest first (the order an agent should pick them up)."""
    query = select(Handoff).where(Handoff.status == "open")
    if customer_id is not None:
        query = query.where(Handoff.customer_id == customer_id)
    rows = session.scalars(query.order_by(Handoff.priority.desc(), Handoff.created_at, Handoff.id))
    return [_handoff_view(h) for h in rows]


def record_complaint(
    session: Session,
    customer_id: str,
    *,
    text: str,
    channel: str,
    category: str | None = None,
    now: dt.datetime,
) -> ComplaintView:
    _require_customer(session, customer_id)
    complaint = Complaint(
        customer_id=customer_id,
        channel=channel,
        category=category,
        text=text[:4000],
        status="open",
        created_at=now,
    )
    session.add(complaint)
    session.flush()
    return ComplaintView(complaint.id, f"TS{complaint.id:08d}", channel, category, complaint.text, now)


def record_opt_out(session: Session, customer_id: str, *, topic: str, channel: str, now: dt.datetime) -> OptOutView:
    """Idempotent: opting out twice of the same topic on the same channel keeps the first record."""
    _require_customer(session, customer_id)
    existing = session.scalar(
        select(OptOut).where(OptOut.customer_id == customer_id, OptOut.topic == topic, OptOut.channel == channel)
    )
    if existing is None:
        existing = OptOut(customer_id=customer_id, topic=topic, channel=channel, created_at=now)
        session.add(existing)
        session.flush()
    return OptOutView(customer_id, existing.topic, existing.channel, existing.created_at)


def is_opted_out(session: Session, customer_id: str, *, topic: str, channel: str) -> bool:
    """True when an opt-out covers this topic on this channel ('all' matches any topic or channel)."""
    row = session.scalar(
        select(OptOut.id)
        .where(
            OptOut.customer_id == customer_id,
            OptOut.topic.in_((topic, "all")),
            OptOut.channel.in_((channel, "all")),
        )
        .limit(1)
    )
    return row is not None


def opt_outs(session: Session, customer_id: str) -> list[OptOutView]:
    rows = session.scalars(select(OptOut).where(OptOut.customer_id == customer_id).order_by(OptOut.id))
    return [OptOutView(o.customer_id, o.topic, o.channel, o.created_at) for o in rows]


def report_fraud(
    session: Session,
    customer_id: str,
    *,
    channel: str,
    last4: str | None = None,
    description: str = "",
    now: dt.datetime,
) -> FraudReportView:
    """Freeze the named card, or every active card when none is named, and open a high-priority handoff."""
    _require_customer(session, customer_id)
    if last4:
        frozen = [cards.freeze(session, customer_id, last4, now)]
    else:
        active = session.scalars(
            select(Card.last4).where(Card.customer_id == customer_id, Card.status == "active").order_by(Card.id)
        ).all()
        frozen = [cards.freeze(session, customer_id, digits, now) for digits in active]
    frozen_last4 = tuple(card.last4 for card in frozen if card.status == "frozen")
    summary = f"fraud report; frozen cards: {', '.join(frozen_last4) or 'none'}"
    if description:
        summary += f"; customer says: {description[:1000]}"
    handoff = request_handoff(
        session, customer_id, reason="fraud", channel=channel, priority="high", summary=summary, now=now
    )
    report = FraudReport(
        customer_id=customer_id,
        channel=channel,
        description=description[:4000],
        frozen_card_ids=",".join(card.id for card in frozen),
        handoff_id=handoff.id,
        created_at=now,
    )
    session.add(report)
    session.flush()
    return FraudReportView(report.id, frozen_last4, handoff.id, now)
