"""The audit trail of risk decisions, the fraud watchlist, and the clearance a transfer needs to execute."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bankcore.ledger import new_id
from bankcore.models import RiskDecision, RiskWatchlistEntry
from bankcore.risk.config import SEVERITY
from bankcore.risk.engine import Decision
from bankcore.risk.features import count_events, phrase_hits
from bankcore.risk.signals import EventCount, RiskInput

# Why a subject may not execute (None: it may).
UNCHECKED, NOT_EXECUTABLE, UNACKNOWLEDGED, STEP_UP_MISSING = (
    "risk_unchecked",
    "risk_not_executable",
    "risk_warning_unacknowledged",
    "risk_step_up_missing",
)


@dataclass(frozen=True)
class StoredDecision:
    id: str
    customer_id: str
    kind: str
    subject_id: str
    action: str
    reasons: tuple[Mapping[str, str], ...]
    warning_key: str | None
    freeze: bool
    score: float | None
    channel: str
    created_at: dt.datetime
    acknowledged_at: dt.datetime | None
    stepped_up_at: dt.datetime | None

    @property
    def needs_step_up(self) -> bool:
        return SEVERITY["step_up"] <= SEVERITY[self.action] <= SEVERITY["warn"]


def _view(row: RiskDecision) -> StoredDecision:
    return StoredDecision(
        id=row.id,
        customer_id=row.customer_id,
        kind=row.kind,
        subject_id=row.subject_id,
        action=row.action,
        reasons=tuple(row.reasons or ()),
        warning_key=row.warning_key,
        freeze=row.freeze,
        score=row.score,
        channel=row.channel,
        created_at=row.created_at,
        acknowledged_at=row.acknowledged_at,
        stepped_up_at=row.stepped_up_at,
    )


def on_watchlist(session: Session, kind: str, key: str | None) -> bool:
    if not key:
        return False
    found = session.scalar(
        select(RiskWatchlistEntry.id).where(RiskWatchlistEntry.kind == kind, RiskWatchlistEntry.key == key).limit(1)
    )
    return found is not None


def add_to_watchlist(session: Session, kind: str, key: str, reason: str, now: dt.datetime) -> bool:
    """Add an entry; False when it was already there."""
    if on_watchlist(session, kind, key):
        return False
    session.add(RiskWatchlistEntry(kind=kind, key=key, reason=reason[:200], added_at=now))
    session.flush()
    return True


def _counts(risk: RiskInput) -> tuple[EventCount, ...]:
    return risk.event_counts if risk.event_counts is not None else count_events(risk.events, risk.ts)


def signal_summary(risk: RiskInput, phrases: tuple[str, ...]) -> dict[str, Any]:
    """The inputs kept with a decision: enough to explain and replay it, never what the customer typed.

    Only the fraud phrases found are kept, not the utterances (a message may have held anything).
    """
    return {
        "amount": str(risk.amount),
        "currency": risk.currency,
        "payee_key": risk.payee_key,
        "payee_new": risk.payee_new,
        "payee_on_fraud_list": risk.payee_on_fraud_list,
        "cross_border": risk.cross_border,
        "channel": risk.channel,
        "input_mode": risk.input_mode,
        "device_id": risk.device_id,
        "device_known": risk.device_known,
        "caller_id_mismatch": risk.caller_id_mismatch,
        "failed_verifications_24h": risk.failed_verifications_24h,
        "fraud_phrases_found": phrase_hits(risk.utterances, phrases),
        "history_count": len(risk.history),
        "events_24h": {f"{c.channel}:{c.type}": c.last_24h for c in _counts(risk) if c.last_24h},
    }


def record(
    session: Session,
    *,
    decision: Decision,
    risk: RiskInput,
    features: Mapping[str, float],
    subject_id: str,
    phrases: tuple[str, ...],
    now: dt.datetime,
) -> StoredDecision:
    row = RiskDecision(
        id=new_id("R"),
        customer_id=risk.customer_id,
        kind=risk.kind,
        subject_id=subject_id,
        action=decision.action,
        reasons=[reason.to_json() for reason in decision.reasons],
        inputs=signal_summary(risk, phrases),
        features={name: round(value, 6) for name, value in features.items() if value},
        score=decision.score,
        warning_key=decision.warning_key,
        freeze=decision.freeze,
        rules_version=decision.rules_version,
        model_version=decision.model_version,
        channel=risk.channel,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return _view(row)


def _latest_row(session: Session, subject_id: str, *, lock: bool = False) -> RiskDecision | None:
    query = (
        select(RiskDecision)
        .where(RiskDecision.subject_id == subject_id)
        .order_by(RiskDecision.created_at.desc(), RiskDecision.id.desc())
        .limit(1)
    )
    if lock:
        query = query.with_for_update()
    return session.scalar(query)


def latest(session: Session, subject_id: str) -> StoredDecision | None:
    row = _latest_row(session, subject_id)
    return _view(row) if row is not None else None


def mark_acknowledged(session: Session, subject_id: str, now: dt.datetime) -> StoredDecision | None:
    row = _latest_row(session, subject_id, lock=True)
    if row is None or row.action != "warn":
        return _view(row) if row is not None else None
    row.acknowledged_at = row.acknowledged_at or now
    session.flush()
    return _view(row)


def mark_stepped_up(session: Session, subject_id: str, now: dt.datetime) -> None:
    row = _latest_row(session, subject_id, lock=True)
    if row is not None:
        row.stepped_up_at = row.stepped_up_at or now
        session.flush()


def clearance_problem(session: Session, subject_id: str) -> str | None:
    """None when the latest decision lets the subject execute now; otherwise why not (fail closed)."""
    decision = latest(session, subject_id)
    if decision is None:
        return UNCHECKED
    if SEVERITY[decision.action] > SEVERITY["warn"]:
        return NOT_EXECUTABLE
    if decision.action == "warn" and decision.acknowledged_at is None:
        return UNACKNOWLEDGED
    if decision.needs_step_up and decision.stepped_up_at is None:
        return STEP_UP_MISSING
    return None


def recent_for_customer(
    session: Session, customer_id: str, since: dt.datetime, *, interrupting_only: bool = True, limit: int = 10
) -> list[StoredDecision]:
    """The customer's recent decisions, newest first (what a human agent sees on handoff)."""
    query = select(RiskDecision).where(RiskDecision.customer_id == customer_id, RiskDecision.created_at >= since)
    if interrupting_only:
        query = query.where(RiskDecision.action.in_(("step_up", "warn", "hold", "block")))
    rows = session.scalars(query.order_by(RiskDecision.created_at.desc(), RiskDecision.id.desc()).limit(limit))
    return [_view(row) for row in rows]


def counts(session: Session) -> list[tuple[str, str, int]]:
    """(kind, action, count) over every stored decision, for the metrics endpoint."""
    rows = session.execute(
        select(RiskDecision.kind, RiskDecision.action, func.count()).group_by(RiskDecision.kind, RiskDecision.action)
    )
    return [(str(kind), str(action), int(count)) for kind, action, count in rows]
