"""The chat channels' durable inbox (platform messages acknowledged, deduplicated, owed an answer) and outbox
(replies owed to platform users, sent with retries and backoff).

The inbox is what makes "acknowledge at once, answer later" safe: a message is stored (sealed) before the
platform gets its acknowledgement, so a crash loses nothing, and the unique (channel, platform message id)
turns every platform retry into a counted duplicate. The outbox is what makes the platform API's failures
safe: a reply is queued in the same transaction that marks the message answered, and leaves only as sent or,
after the retries, as failed, never silently. Claims take a lease (SKIP LOCKED on PostgreSQL, the write lock
on SQLite, as `bankcore.reminders.store` does) so several gateway processes can share the work.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from bankcore.database import unit_of_work
from bankcore.models import ChannelInboxMessage, ChannelOutboxMessage
from bankcore.sealing import Sealer

RECEIVED, PROCESSING, ANSWERED, FAILED = "received", "processing", "answered", "failed"
PENDING, SENDING, SENT = "pending", "sending", "sent"


@dataclass(frozen=True)
class Received:
    inbox_id: int
    duplicate: bool


@dataclass(frozen=True)
class ClaimedInbox:
    id: int
    channel: str
    external_user: str
    kind: str
    body: dict[str, Any]
    attempt_no: int


@dataclass(frozen=True)
class OutboundReply:
    """One platform message body to send to a user; `key` makes its idempotency key unique per answer."""

    key: str
    body: Mapping[str, Any]


@dataclass(frozen=True)
class ClaimedOutbox:
    id: int
    channel: str
    idempotency_key: str
    external_user: str
    body: dict[str, Any]
    attempt_no: int
    inbox_id: int | None


def _insert(session: Session, table: Any) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"no INSERT ... ON CONFLICT for {dialect}")


def receive(
    session: Session,
    sealer: Sealer,
    *,
    channel: str,
    platform_msg_id: str,
    external_user: str,
    kind: str,
    body: Mapping[str, Any],
    now: dt.datetime,
) -> Received:
    """Store a platform message unless it is a retry of one already stored (then count the duplicate)."""
    statement = (
        _insert(session, ChannelInboxMessage)
        .values(
            channel=channel,
            platform_msg_id=platform_msg_id[:160],
            external_user=external_user[:128],
            kind=kind[:32],
            sealed_body=sealer.seal(dict(body)),
            status=RECEIVED,
            attempts=0,
            duplicates=0,
            received_at=now,
        )
        .on_conflict_do_nothing(index_elements=["channel", "platform_msg_id"])
        .returning(ChannelInboxMessage.id)
    )
    inserted = session.execute(statement).scalar_one_or_none()
    if inserted is not None:
        return Received(inbox_id=int(inserted), duplicate=False)
    session.execute(
        update(ChannelInboxMessage)
        .where(ChannelInboxMessage.channel == channel, ChannelInboxMessage.platform_msg_id == platform_msg_id[:160])
        .values(duplicates=ChannelInboxMessage.duplicates + 1)
        .execution_options(synchronize_session=False)
    )
    existing = session.scalar(
        select(ChannelInboxMessage.id).where(
            ChannelInboxMessage.channel == channel, ChannelInboxMessage.platform_msg_id == platform_msg_id[:160]
        )
    )
    return Received(inbox_id=int(existing or 0), duplicate=True)


@dataclass(frozen=True)
class RequestStart:
    """What to do with a request that carries a client message id: `run` it (first time, or taking over one
    that failed or whose handler died), `replay` the stored reply, or tell the client it is `in_progress`."""

    inbox_id: int
    outcome: str  # run | replay | in_progress
    reply: dict[str, Any] | None = None


def begin_request(
    session: Session,
    sealer: Sealer,
    *,
    channel: str,
    request_key: str,
    external_user: str,
    kind: str,
    now: dt.datetime,
    lease: dt.timedelta,
    count_duplicate: bool = True,
) -> RequestStart:
    """Idempotency for request/response channels (the mini-program): the first request with a key runs under a
    lease; a retry gets the stored reply once there is one, and takes over a request that failed or whose
    handler died (lease expired). Keys are per user: `request_key` must already include the platform user.
    `count_duplicate=False` when the same retry asks again (waiting for the first request to finish)."""
    key = request_key[:160]
    inserted = session.execute(
        _insert(session, ChannelInboxMessage)
        .values(
            channel=channel,
            platform_msg_id=key,
            external_user=external_user[:128],
            kind=kind[:32],
            sealed_body=None,
            status=PROCESSING,
            attempts=1,
            duplicates=0,
            lease_until=now + lease,
            received_at=now,
        )
        .on_conflict_do_nothing(index_elements=["channel", "platform_msg_id"])
        .returning(ChannelInboxMessage.id)
    ).scalar_one_or_none()
    if inserted is not None:
        return RequestStart(inbox_id=int(inserted), outcome="run")
    row = session.execute(
        select(ChannelInboxMessage.id, ChannelInboxMessage.status, ChannelInboxMessage.sealed_body).where(
            ChannelInboxMessage.channel == channel, ChannelInboxMessage.platform_msg_id == key
        )
    ).one()
    if count_duplicate:
        session.execute(
            update(ChannelInboxMessage)
            .where(ChannelInboxMessage.id == row.id)
            .values(duplicates=ChannelInboxMessage.duplicates + 1)
            .execution_options(synchronize_session=False)
        )
    if row.status == ANSWERED and row.sealed_body:
        return RequestStart(inbox_id=int(row.id), outcome="replay", reply=sealer.unseal(row.sealed_body))
    taken = session.execute(
        update(ChannelInboxMessage)
        .where(
            ChannelInboxMessage.id == row.id,
            or_(
                ChannelInboxMessage.status == FAILED,
                (ChannelInboxMessage.status == PROCESSING) & (ChannelInboxMessage.lease_until <= now),
            ),
        )
        .values(status=PROCESSING, lease_until=now + lease, attempts=ChannelInboxMessage.attempts + 1)
        .returning(ChannelInboxMessage.id)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    return RequestStart(inbox_id=int(row.id), outcome="run" if taken is not None else "in_progress")


def complete_request(
    session: Session, sealer: Sealer, inbox_id: int, *, reply: Mapping[str, Any], now: dt.datetime
) -> None:
    """Keep the reply (sealed: it may show balances) for the request's retries."""
    session.execute(
        update(ChannelInboxMessage)
        .where(ChannelInboxMessage.id == inbox_id)
        .values(status=ANSWERED, sealed_body=sealer.seal(dict(reply)), lease_until=None, answered_at=now)
        .execution_options(synchronize_session=False)
    )


def abandon_request(session: Session, inbox_id: int, *, error: str) -> None:
    """The request produced no reply (the assistant was down, the handler raised): a retry runs it again."""
    session.execute(
        update(ChannelInboxMessage)
        .where(ChannelInboxMessage.id == inbox_id, ChannelInboxMessage.status == PROCESSING)
        .values(status=FAILED, lease_until=None, last_error=error[:2000])
        .execution_options(synchronize_session=False)
    )


def already_received(session: Session, *, channel: str, platform_msg_id: str) -> bool:
    """Whether this platform message is stored already (its callback is a retry)."""
    found = session.scalar(
        select(ChannelInboxMessage.id).where(
            ChannelInboxMessage.channel == channel, ChannelInboxMessage.platform_msg_id == platform_msg_id[:160]
        )
    )
    return found is not None


def _claimable_inbox(channel: str, now: dt.datetime) -> ColumnElement[bool]:
    return (ChannelInboxMessage.channel == channel) & or_(
        ChannelInboxMessage.status == RECEIVED,
        (ChannelInboxMessage.status == PROCESSING) & (ChannelInboxMessage.lease_until <= now),
    )


def claim_inbox(
    factory: sessionmaker[Session],
    sealer: Sealer,
    *,
    channel: str,
    now: dt.datetime,
    lease: dt.timedelta,
    limit: int,
    ids: Sequence[int] | None = None,
) -> list[ClaimedInbox]:
    """Lease messages to answer: new ones and those whose processor died (lease expired). `ids` narrows it."""
    with unit_of_work(factory) as session:
        candidates = (
            select(ChannelInboxMessage.id)
            .where(_claimable_inbox(channel, now))
            .order_by(ChannelInboxMessage.id)
            .limit(limit)
        )
        if ids is not None:
            candidates = candidates.where(ChannelInboxMessage.id.in_(list(ids)))
        if session.get_bind().dialect.name == "postgresql":
            candidates = candidates.with_for_update(skip_locked=True)
        rows = session.execute(
            update(ChannelInboxMessage)
            .where(ChannelInboxMessage.id.in_(candidates.scalar_subquery()))
            .values(status=PROCESSING, lease_until=now + lease, attempts=ChannelInboxMessage.attempts + 1)
            .returning(
                ChannelInboxMessage.id,
                ChannelInboxMessage.channel,
                ChannelInboxMessage.external_user,
                ChannelInboxMessage.kind,
                ChannelInboxMessage.sealed_body,
                ChannelInboxMessage.attempts,
            )
            .execution_options(synchronize_session=False)
        ).all()
    claimed = [
        ClaimedInbox(
            id=row.id,
            channel=row.channel,
            external_user=row.external_user,
            kind=row.kind,
            body=sealer.unseal(row.sealed_body) if row.sealed_body else {},
            attempt_no=row.attempts,
        )
        for row in rows
    ]
    return sorted(claimed, key=lambda item: item.id)


def answer(
    session: Session,
    inbox_id: int,
    replies: Sequence[OutboundReply],
    *,
    channel: str,
    external_user: str,
    now: dt.datetime,
) -> int:
    """Queue the replies and mark the message answered (body cleared) in one transaction; returns rows queued."""
    queued = 0
    for reply in replies:
        result = session.execute(
            _insert(session, ChannelOutboxMessage)
            .values(
                channel=channel,
                idempotency_key=f"{channel}:{inbox_id}:{reply.key}"[:200],
                external_user=external_user[:128],
                inbox_id=inbox_id,
                body=dict(reply.body),
                status=PENDING,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
            .returning(ChannelOutboxMessage.id)
        ).scalar_one_or_none()
        queued += result is not None
    session.execute(
        update(ChannelInboxMessage)
        .where(ChannelInboxMessage.id == inbox_id)
        .values(status=ANSWERED, sealed_body=None, lease_until=None, answered_at=now, last_error=None)
        .execution_options(synchronize_session=False)
    )
    return queued


def enqueue(
    session: Session,
    *,
    channel: str,
    idempotency_key: str,
    external_user: str,
    body: Mapping[str, Any],
    now: dt.datetime,
) -> bool:
    """Queue one outbound message not tied to an inbound one (a reminder); False when the key was queued before."""
    inserted = session.execute(
        _insert(session, ChannelOutboxMessage)
        .values(
            channel=channel,
            idempotency_key=idempotency_key[:200],
            external_user=external_user[:128],
            inbox_id=None,
            body=dict(body),
            status=PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(ChannelOutboxMessage.id)
    ).scalar_one_or_none()
    return inserted is not None


def fail_inbox(session: Session, inbox_id: int, *, error: str, final: bool, retry_at: dt.datetime | None) -> None:
    """Processing raised: give it back for a retry (lease shortened) or, when final, record it as failed."""
    values: dict[str, Any] = {"last_error": error[:2000]}
    if final:
        values.update(status=FAILED, lease_until=None, sealed_body=None)
    else:
        values.update(status=PROCESSING, lease_until=retry_at)
    session.execute(
        update(ChannelInboxMessage)
        .where(ChannelInboxMessage.id == inbox_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def claim_outbox(
    factory: sessionmaker[Session], *, channel: str, now: dt.datetime, lease: dt.timedelta, limit: int
) -> list[ClaimedOutbox]:
    """Lease replies that are due (new, retry time come, or a sender that died mid-send), oldest first."""
    with unit_of_work(factory) as session:
        candidates = (
            select(ChannelOutboxMessage.id)
            .where(
                ChannelOutboxMessage.channel == channel,
                ChannelOutboxMessage.status.in_([PENDING, SENDING]),
                ChannelOutboxMessage.next_attempt_at <= now,
            )
            .order_by(ChannelOutboxMessage.id)
            .limit(limit)
        )
        if session.get_bind().dialect.name == "postgresql":
            candidates = candidates.with_for_update(skip_locked=True)
        rows = session.execute(
            update(ChannelOutboxMessage)
            .where(ChannelOutboxMessage.id.in_(candidates.scalar_subquery()))
            .values(
                status=SENDING,
                lease_until=now + lease,
                next_attempt_at=now + lease,
                attempts=ChannelOutboxMessage.attempts + 1,
            )
            .returning(
                ChannelOutboxMessage.id,
                ChannelOutboxMessage.channel,
                ChannelOutboxMessage.idempotency_key,
                ChannelOutboxMessage.external_user,
                ChannelOutboxMessage.body,
                ChannelOutboxMessage.attempts,
                ChannelOutboxMessage.inbox_id,
            )
            .execution_options(synchronize_session=False)
        ).all()
    claimed = [
        ClaimedOutbox(
            id=row.id,
            channel=row.channel,
            idempotency_key=row.idempotency_key,
            external_user=row.external_user,
            body=dict(row.body or {}),
            attempt_no=row.attempts,
            inbox_id=row.inbox_id,
        )
        for row in rows
    ]
    # Per user, in the order they were queued: a reply's sentences must not arrive shuffled.
    return sorted(claimed, key=lambda item: item.id)


def mark_sent(
    session: Session, outbox_id: int, *, now: dt.datetime, platform_msg_id: str | None, partial_failure: str | None
) -> None:
    session.execute(
        update(ChannelOutboxMessage)
        .where(ChannelOutboxMessage.id == outbox_id)
        .values(
            status=SENT,
            sent_at=now,
            lease_until=None,
            next_attempt_at=None,
            platform_msg_id=platform_msg_id,
            partial_failure=partial_failure,
            last_error=None,
        )
        .execution_options(synchronize_session=False)
    )


def mark_retry(session: Session, outbox_id: int, *, error: str, retry_at: dt.datetime) -> None:
    session.execute(
        update(ChannelOutboxMessage)
        .where(ChannelOutboxMessage.id == outbox_id)
        .values(status=PENDING, lease_until=None, next_attempt_at=retry_at, last_error=error[:2000])
        .execution_options(synchronize_session=False)
    )


def mark_failed(session: Session, outbox_id: int, *, error: str) -> None:
    session.execute(
        update(ChannelOutboxMessage)
        .where(ChannelOutboxMessage.id == outbox_id)
        .values(status=FAILED, lease_until=None, next_attempt_at=None, last_error=error[:2000])
        .execution_options(synchronize_session=False)
    )


def outbox_counts(session: Session, channel: str | None = None) -> dict[str, int]:
    query = select(ChannelOutboxMessage.status, func.count()).group_by(ChannelOutboxMessage.status)
    if channel is not None:
        query = query.where(ChannelOutboxMessage.channel == channel)
    return {status: int(count) for status, count in session.execute(query)}


def inbox_counts(session: Session, channel: str | None = None) -> dict[str, int]:
    query = select(ChannelInboxMessage.status, func.count()).group_by(ChannelInboxMessage.status)
    if channel is not None:
        query = query.where(ChannelInboxMessage.channel == channel)
    return {status: int(count) for status, count in session.execute(query)}


def duplicates_seen(session: Session, channel: str) -> int:
    total = session.scalar(
        select(func.coalesce(func.sum(ChannelInboxMessage.duplicates), 0)).where(ChannelInboxMessage.channel == channel)
    )
    return int(total or 0)
