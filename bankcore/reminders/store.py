"""The durable reminder store: idempotent planning, leased claims, guarded completions and the attempt history.

State machine: planned → due → dispatching → delivered | failed | cancelled | suppressed. A worker claims
reminders with a lease (`claim_due`); every completion is guarded by that lease (same owner, same attempt,
still dispatching), so a worker whose lease was taken over can no longer change the reminder.

Claiming is safe with many workers in many processes:

- PostgreSQL: `UPDATE ... WHERE id IN (SELECT id ... FOR UPDATE SKIP LOCKED LIMIT n) RETURNING ...`: the
  subquery locks the rows it picks and skips rows another claimer has locked, so concurrent claimers take
  disjoint sets without waiting on each other.
- SQLite: the same single `UPDATE ... RETURNING` statement (SQLite ≥ 3.35), run in a transaction that
  `bankcore.database.make_engine` opens with `BEGIN IMMEDIATE`. That takes the database's write lock before
  anything is read, so two claimers (threads or processes) are serialised: the second one's subquery runs
  only after the first has committed and sees those rows as dispatching. SQLite has no row locks, so this is
  the equivalent of SKIP LOCKED; a waiting claimer blocks for at most the busy timeout (30 s) and claims are
  short. WAL keeps readers unblocked meanwhile.

While a reminder is dispatching, `next_attempt_at` holds its lease's end: a crashed worker's claim comes due
again exactly when its lease expires, so "due, or dispatching with an expired lease" is one range scan of the
(status, next_attempt_at) index.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, Update, and_, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from bankcore.database import unit_of_work
from bankcore.models import Reminder, ReminderAttempt
from bankcore.reminders.planned import PlannedReminder

__all__ = [
    "ACTIVE_STATUSES",
    "FINAL_STATUSES",
    "ClaimedReminder",
    "PlannedReminder",
    "add_planned",
    "cancel_where",
    "claim_due",
    "counts_by_status",
    "list_reminders",
    "mark_cancelled",
    "mark_delivered",
    "mark_failed",
    "mark_retry",
    "mark_suppressed",
    "mark_waiting",
    "pause",
    "recent_deliveries",
    "record_outcome",
    "resume",
]

PLANNED, DUE, DISPATCHING = "planned", "due", "dispatching"
DELIVERED, FAILED, CANCELLED, SUPPRESSED = "delivered", "failed", "cancelled", "suppressed"
# Not yet handed to a worker: what a claim takes, and what cancellation may still stop.
WAITING_STATUSES = (PLANNED, DUE)
ACTIVE_STATUSES = (PLANNED, DUE, DISPATCHING)
FINAL_STATUSES = (DELIVERED, FAILED, CANCELLED, SUPPRESSED)
OUTCOMES = ("reached", "acted", "promised", "declined", "opted_out")

# Rows per INSERT: well under SQLite's 32,766 bound parameters at 13 columns a row, and PostgreSQL's 65,535.
INSERT_CHUNK = 1000
_ERROR_CHARS = 2000
# The Core table: inserts through it skip the ORM's bulk-insert bookkeeping, which planning does not need.
REMINDERS = cast(Table, Reminder.__table__)


@dataclass(frozen=True)
class ClaimedReminder:
    """A reminder as one worker holds it for one attempt: what the policy and the sender need, and the lease."""

    id: int
    key: str  # also the channel's idempotency key: the same on every attempt and every worker
    customer_id: str
    rule_id: str
    kind: str
    topic: str
    item_id: str
    due_date: dt.date
    send_after: dt.datetime
    channels: tuple[str, ...]
    payload: dict[str, Any]
    attempt_no: int  # 1-based; attempts the policy made wait are not counted
    worker: str
    claimed_at: dt.datetime
    lease_until: dt.datetime

    @property
    def attempts(self) -> int:
        """Attempts so far, this one included (the policy's `ReminderLike` reads this name)."""
        return self.attempt_no


def _dialect_insert(session: Session) -> Any:
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(REMINDERS).on_conflict_do_nothing(index_elements=["key"])
    if name == "sqlite":
        # ON CONFLICT(key) rather than INSERT OR IGNORE: OR IGNORE would also swallow NOT NULL violations.
        return sqlite.insert(REMINDERS).on_conflict_do_nothing(index_elements=["key"])
    raise NotImplementedError(f"reminder store: unsupported database {name}")


def add_planned(session: Session, planned: PlannedReminder | Sequence[PlannedReminder], now: dt.datetime) -> int:
    """Store the reminders whose key is new; returns how many were created (0 for keys already stored).

    Idempotent by `key` even against a concurrent planner: the database drops the duplicate row
    (ON CONFLICT DO NOTHING / INSERT OR IGNORE) instead of the caller checking first and racing.
    """
    items = [planned] if isinstance(planned, PlannedReminder) else list(planned)
    created = 0
    for start in range(0, len(items), INSERT_CHUNK):
        rows = [
            {
                "key": item.key,
                "customer_id": item.customer_id,
                "rule_id": item.rule_id,
                "kind": item.kind,
                "topic": item.topic,
                "item_id": item.item_id,
                "due_date": item.due_date,
                "send_after": item.send_after,
                "channels": list(item.channels),
                "payload": dict(item.payload),
                "status": PLANNED,
                "attempts": 0,
                "next_attempt_at": item.send_after,
                "paused": False,
                "created_at": now,
                "updated_at": now,
            }
            for item in items[start : start + INSERT_CHUNK]
        ]
        # An executemany (SQLAlchemy batches it as "insertmanyvalues": one cached statement, few round trips);
        # RETURNING yields only the rows actually inserted, which rowcount does not report reliably here.
        result = session.execute(_dialect_insert(session).returning(Reminder.id), rows)
        created += len(result.all())
    return created


def claim_due(
    session_factory: sessionmaker[Session], *, worker: str, now: dt.datetime, lease: dt.timedelta, limit: int
) -> list[ClaimedReminder]:
    """Atomically lease up to `limit` reminders that are due at `now`, including expired claims of crashed workers.

    Takes planned and due reminders whose `next_attempt_at` has come, and dispatching ones whose lease has
    expired (their `next_attempt_at` is the lease's end); skips paused ones. Each taken reminder becomes
    dispatching, owned by `worker` until `now + lease`, with one more attempt. Commits before returning.
    """
    if limit <= 0:
        return []
    lease_until = now + lease
    with unit_of_work(session_factory) as session:
        candidates = (
            select(Reminder.id)
            .where(
                Reminder.status.in_(ACTIVE_STATUSES),
                Reminder.next_attempt_at <= now,
                Reminder.paused.is_(False),
            )
            .order_by(Reminder.next_attempt_at)
            .limit(limit)
        )
        if session.get_bind().dialect.name == "postgresql":
            candidates = candidates.with_for_update(skip_locked=True)
        statement = (
            update(Reminder)
            .where(Reminder.id.in_(candidates.scalar_subquery()))
            .values(
                status=DISPATCHING,
                lease_owner=worker,
                lease_until=lease_until,
                next_attempt_at=lease_until,
                attempts=Reminder.attempts + 1,
                updated_at=now,
            )
            .returning(
                Reminder.id,
                Reminder.key,
                Reminder.customer_id,
                Reminder.rule_id,
                Reminder.kind,
                Reminder.topic,
                Reminder.item_id,
                Reminder.due_date,
                Reminder.send_after,
                Reminder.channels,
                Reminder.payload,
                Reminder.attempts,
            )
            # A bulk UPDATE with RETURNING; the session holds no Reminder objects to keep in sync.
            .execution_options(synchronize_session=False)
        )
        rows = session.execute(statement).all()
    claimed = [
        ClaimedReminder(
            id=row.id,
            key=row.key,
            customer_id=row.customer_id,
            rule_id=row.rule_id,
            kind=row.kind,
            topic=row.topic,
            item_id=row.item_id,
            due_date=row.due_date,
            send_after=row.send_after,
            channels=tuple(row.channels or ()),
            payload=dict(row.payload or {}),
            attempt_no=row.attempts,
            worker=worker,
            claimed_at=now,
            lease_until=lease_until,
        )
        for row in rows
    ]
    # RETURNING order is unspecified: hand them out oldest first, as they were chosen.
    claimed.sort(key=lambda reminder: (reminder.send_after, reminder.id))
    return claimed


def _holds_lease(claimed: ClaimedReminder) -> ColumnElement[bool]:
    # The attempt number fences a worker that lost its lease and re-claimed the same reminder under the
    # same worker id: only the newest claim may complete.
    return and_(
        Reminder.id == claimed.id,
        Reminder.lease_owner == claimed.worker,
        Reminder.status == DISPATCHING,
        Reminder.attempts == claimed.attempt_no,
    )


def _complete(
    session: Session,
    claimed: ClaimedReminder,
    statement: Update,
    *,
    result: str,
    channel: str | None,
    detail: str,
    now: dt.datetime,
) -> bool:
    outcome = session.execute(statement.where(_holds_lease(claimed)).execution_options(synchronize_session=False))
    if int(getattr(outcome, "rowcount", 0) or 0) != 1:
        return False
    session.add(
        ReminderAttempt(
            reminder_id=claimed.id,
            attempt_no=claimed.attempt_no,
            worker=claimed.worker,
            channel=channel,
            started_at=claimed.claimed_at,
            finished_at=now,
            result=result,
            detail=detail[:_ERROR_CHARS],
        )
    )
    return True


def _finish(status: str, now: dt.datetime, **values: Any) -> Update:
    return update(Reminder).values(
        status=status, lease_owner=None, lease_until=None, next_attempt_at=None, updated_at=now, **values
    )


def mark_delivered(
    session: Session, claimed: ClaimedReminder, *, channel: str, now: dt.datetime, detail: str = ""
) -> bool:
    """The channel accepted it: final. False when the lease was lost (then nothing was changed)."""
    statement = _finish(DELIVERED, now, channel=channel, last_error=None)
    return _complete(session, claimed, statement, result="delivered", channel=channel, detail=detail, now=now)


def mark_retry(
    session: Session,
    claimed: ClaimedReminder,
    *,
    at: dt.datetime,
    error: str,
    now: dt.datetime,
    channel: str | None = None,
) -> bool:
    """The attempt failed but may succeed later: due again at `at` (the attempt counts)."""
    statement = update(Reminder).values(
        status=DUE,
        lease_owner=None,
        lease_until=None,
        next_attempt_at=at,
        last_error=error[:_ERROR_CHARS],
        updated_at=now,
    )
    return _complete(session, claimed, statement, result="retry", channel=channel, detail=error, now=now)


def mark_waiting(
    session: Session, claimed: ClaimedReminder, *, until: dt.datetime, reason: str, now: dt.datetime
) -> bool:
    """The policy said not now (quiet hours, a frequency cap): due again at `until`; the attempt is not counted."""
    statement = update(Reminder).values(
        status=DUE,
        lease_owner=None,
        lease_until=None,
        next_attempt_at=until,
        attempts=Reminder.attempts - 1,
        updated_at=now,
    )
    return _complete(session, claimed, statement, result="waiting", channel=None, detail=reason, now=now)


def mark_failed(
    session: Session, claimed: ClaimedReminder, *, error: str, now: dt.datetime, channel: str | None = None
) -> bool:
    """Given up (attempts spent, or a failure no retry can fix): final."""
    statement = _finish(FAILED, now, last_error=error[:_ERROR_CHARS])
    return _complete(session, claimed, statement, result="failed", channel=channel, detail=error, now=now)


def mark_cancelled(session: Session, claimed: ClaimedReminder, *, reason: str, now: dt.datetime) -> bool:
    """Moot (the due item was settled): final."""
    statement = _finish(CANCELLED, now, last_error=reason[:_ERROR_CHARS])
    return _complete(session, claimed, statement, result="cancelled", channel=None, detail=reason, now=now)


def mark_suppressed(session: Session, claimed: ClaimedReminder, *, reason: str, now: dt.datetime) -> bool:
    """Never to be sent (opted out, unreachable): final, kept for the record."""
    statement = _finish(SUPPRESSED, now, last_error=reason[:_ERROR_CHARS])
    return _complete(session, claimed, statement, result="suppressed", channel=None, detail=reason, now=now)


def _filters(
    customer_id: str | None, rule_id: str | None, kind: str | None, item_id: str | None
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if customer_id is not None:
        conditions.append(Reminder.customer_id == customer_id)
    if rule_id is not None:
        conditions.append(Reminder.rule_id == rule_id)
    if kind is not None:
        conditions.append(Reminder.kind == kind)
    if item_id is not None:
        conditions.append(Reminder.item_id == item_id)
    return conditions


def cancel_where(
    session: Session,
    *,
    customer_id: str | None = None,
    rule_id: str | None = None,
    kind: str | None = None,
    item_id: str | None = None,
    reason: str,
    now: dt.datetime,
) -> int:
    """Cancel the matching reminders no worker holds yet (planned or due); returns how many.

    A reminder being dispatched is left to its worker (the policy cancels settled items at dispatch), so a
    cancellation never races a send. At least one filter is required: cancelling everything is not a typo
    this function should accept.
    """
    conditions = _filters(customer_id, rule_id, kind, item_id)
    if not conditions:
        raise ValueError("cancel_where needs at least one of customer_id, rule_id, kind, item_id")
    result = session.execute(
        _finish(CANCELLED, now, last_error=reason[:_ERROR_CHARS])
        .where(Reminder.status.in_(WAITING_STATUSES), *conditions)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _set_paused(session: Session, rule_id: str | None, paused: bool) -> int:
    conditions: list[ColumnElement[bool]] = [Reminder.status.in_(ACTIVE_STATUSES), Reminder.paused.is_(not paused)]
    if rule_id is not None:
        conditions.append(Reminder.rule_id == rule_id)
    result = session.execute(
        update(Reminder).where(*conditions).values(paused=paused).execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def pause(session: Session, rule_id: str | None = None) -> int:
    """Hold back the active reminders of `rule_id` (None: all); returns how many were paused.

    A reminder already being sent finishes; a paused one whose lease expires waits for `resume`.
    """
    return _set_paused(session, rule_id, True)


def resume(session: Session, rule_id: str | None = None) -> int:
    """Release paused reminders of `rule_id` (None: all); returns how many."""
    return _set_paused(session, rule_id, False)


def counts_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(select(Reminder.status, func.count()).group_by(Reminder.status))
    return {str(status): int(count) for status, count in rows}


def list_reminders(
    session: Session, *, status: str | None = None, customer_id: str | None = None, limit: int = 50
) -> list[Reminder]:
    """Reminders for ops, the next to be sent first (final ones last, newest first among them)."""
    query = select(Reminder)
    if status is not None:
        query = query.where(Reminder.status == status)
    if customer_id is not None:
        query = query.where(Reminder.customer_id == customer_id)
    query = query.order_by(Reminder.next_attempt_at.is_(None), Reminder.next_attempt_at, Reminder.id.desc())
    return list(session.scalars(query.limit(limit)))


def recent_deliveries(session: Session, customer_id: str, since: dt.datetime) -> list[tuple[str, dt.datetime]]:
    """(channel, delivered at) of the customer's reminders delivered at or after `since`: for frequency caps."""
    rows = session.execute(
        select(ReminderAttempt.channel, ReminderAttempt.finished_at)
        .join(Reminder, Reminder.id == ReminderAttempt.reminder_id)
        .where(
            Reminder.customer_id == customer_id,
            ReminderAttempt.result == DELIVERED,
            ReminderAttempt.finished_at >= since,
        )
        .order_by(ReminderAttempt.finished_at)
    )
    return [(str(channel), finished_at) for channel, finished_at in rows if channel is not None]


def record_outcome(session: Session, reminder_id: int, outcome: str, now: dt.datetime) -> bool:
    """What the customer did with a delivered reminder; False when no such reminder exists."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown reminder outcome {outcome!r} (one of {', '.join(OUTCOMES)})")
    result = session.execute(
        update(Reminder)
        .where(Reminder.id == reminder_id)
        .values(outcome=outcome, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0) == 1


def statuses_of(session: Session, keys: Iterable[str]) -> dict[str, str]:
    """key → status for the given keys (tests and ops checks)."""
    wanted = list(keys)
    rows = session.execute(select(Reminder.key, Reminder.status).where(Reminder.key.in_(wanted)))
    return {str(key): str(status) for key, status in rows}
