"""The store of cross-channel events, customer profiles and contacts: bulk writes, history reads, streams.

Used by the gateway (POST /events and its own contact events), the `bankbot events import` command, the
action server (history before a contact, live contacts) and foresight training (the streams).

Writes are bulk Core statements (one executemany per kind), never row-by-row ORM adds: an import of a
million events is a few hundred statements. Events carrying a client `event_id` are idempotent: the
unique index on `cx_events.event_id` plus ON CONFLICT DO NOTHING (SQLite, PostgreSQL) makes a repeat a
duplicate rather than an error or a second row, even when two writers race with the same id.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bankcore.events import Contact, Event, Profile, public_channel
from bankcore.models import ContactRecord, CrossChannelEvent, CustomerProfile

UTC = dt.UTC

# Rows fetched per round trip by the streaming readers.
STREAM_BATCH = 2000
# The event type the gateway records when a customer starts a contact on a channel.
CONTACT_EVENT_TYPE = "contact"

_EVENTS: Table = CrossChannelEvent.__table__  # type: ignore[assignment]
_PROFILES: Table = CustomerProfile.__table__  # type: ignore[assignment]
_CONTACTS: Table = ContactRecord.__table__  # type: ignore[assignment]


@dataclass
class StoreReport:
    inserted: int
    duplicates: int

    def __add__(self, other: StoreReport) -> StoreReport:
        return StoreReport(self.inserted + other.inserted, self.duplicates + other.duplicates)


def _insert_with_conflict_clause(session: Session, table: Any) -> Any | None:
    """The dialect's INSERT that takes ON CONFLICT (SQLite, PostgreSQL); None on dialects without one."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        return sqlite.insert(table)
    if dialect == "postgresql":
        return postgresql.insert(table)
    return None


def _now() -> dt.datetime:
    return dt.datetime.now(UTC)


def _event_row(event: Event, received_at: dt.datetime) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "customer_id": event.customer_id,
        "ts": event.ts,
        "channel": event.channel,
        "type": event.type,
        "attrs": dict(event.attrs),
        "received_at": received_at,
    }


def _insert_ignoring_duplicates(session: Session, rows: list[dict[str, Any]]) -> int:
    """Insert rows that all carry an event_id; returns how many were new."""
    if not rows:
        return 0
    connection = session.connection()
    upsert = _insert_with_conflict_clause(session, _EVENTS)
    if upsert is not None:
        statement = upsert.on_conflict_do_nothing(index_elements=["event_id"]).returning(_EVENTS.c.id)
        # insertmanyvalues: multi-row INSERT ... RETURNING pages; skipped conflicts return no row.
        return len(connection.execute(statement, rows).all())
    # Other dialects: skip the ids already stored. Not race-free; a racing duplicate raises IntegrityError.
    ids = [row["event_id"] for row in rows]
    known: set[str] = set()
    for start in range(0, len(ids), 500):
        page = ids[start : start + 500]
        known.update(id_ for id_ in session.scalars(select(_EVENTS.c.event_id).where(_EVENTS.c.event_id.in_(page))))
    fresh = [row for row in rows if row["event_id"] not in known]
    if fresh:
        connection.execute(insert(_EVENTS), fresh)
    return len(fresh)


def store_events(session: Session, events: Sequence[Event]) -> StoreReport:
    """Store events in bulk; an event whose `event_id` is already stored (or repeated in the batch) is a
    duplicate. Events without an event_id are always inserted."""
    received_at = _now()
    anonymous: list[dict[str, Any]] = []
    identified: dict[str, dict[str, Any]] = {}
    in_batch_repeats = 0
    for event in events:
        if event.event_id is None:
            anonymous.append(_event_row(event, received_at))
        elif event.event_id in identified:
            in_batch_repeats += 1  # the first occurrence wins, as it would across batches
        else:
            identified[event.event_id] = _event_row(event, received_at)
    if anonymous:
        session.connection().execute(insert(_EVENTS), anonymous)
    # Ascending event_id order: concurrent writers then wait on shared ids in one order, never in a cycle
    # (PostgreSQL reports a deadlock when two batches hold each other's ids in opposite orders).
    new = _insert_ignoring_duplicates(session, [identified[key] for key in sorted(identified)])
    return StoreReport(inserted=len(anonymous) + new, duplicates=in_batch_repeats + len(identified) - new)


def upsert_profiles(session: Session, profiles: Sequence[Profile]) -> int:
    """Insert or replace profiles (the latest wins, also within the batch); returns how many customers."""
    latest: dict[str, dict[str, Any]] = {}
    updated_at = _now()
    for profile in profiles:
        latest[profile.customer_id] = {
            "customer_id": profile.customer_id,
            "attrs": dict(profile.attrs),
            "updated_at": updated_at,
        }
    rows = list(latest.values())
    if not rows:
        return 0
    connection = session.connection()
    statement = _insert_with_conflict_clause(session, _PROFILES)
    if statement is not None:
        statement = statement.on_conflict_do_update(
            index_elements=["customer_id"],
            set_={"attrs": statement.excluded.attrs, "updated_at": statement.excluded.updated_at},
        )
        connection.execute(statement, rows)
    else:
        for row in rows:
            session.merge(CustomerProfile(**row))
    return len(rows)


def add_contacts(session: Session, contacts: Sequence[Contact], *, source: str = "import") -> int:
    """Append contacts (labelled or not) in bulk; returns how many."""
    if not contacts:
        return 0
    created_at = _now()
    rows = [
        {
            "customer_id": contact.customer_id,
            "ts": contact.ts,
            "channel": contact.channel,
            "intent": contact.intent,
            "predicted_intent": None,
            "predicted_p": None,
            "source": source,
            "conversation_id": None,
            "created_at": created_at,
        }
        for contact in contacts
    ]
    session.connection().execute(insert(_CONTACTS), rows)
    return len(rows)


def _event(row: CrossChannelEvent) -> Event:
    return Event(
        customer_id=row.customer_id,
        ts=row.ts,
        channel=row.channel,
        type=row.type,
        attrs=dict(row.attrs or {}),
        event_id=row.event_id,
    )


def events_before(
    session: Session,
    customer_id: str,
    at: dt.datetime,
    *,
    max_events: int = 64,
    lookback: dt.timedelta = dt.timedelta(days=90),
) -> list[Event]:
    """The customer's most recent `max_events` events with `at - lookback <= ts < at`, oldest first.

    Strictly before `at`: what happens at the moment of the contact is not history the model may see.
    One query on ix_cx_events_customer_ts (customer_id, ts), read backwards and limited.
    """
    if max_events <= 0:
        return []
    rows = session.scalars(
        select(CrossChannelEvent)
        .where(
            CrossChannelEvent.customer_id == customer_id,
            CrossChannelEvent.ts < at,
            CrossChannelEvent.ts >= at - lookback,
        )
        .order_by(CrossChannelEvent.ts.desc(), CrossChannelEvent.id.desc())
        .limit(max_events)
    ).all()
    return [_event(row) for row in reversed(rows)]


def last_event_ts(session: Session, customer_id: str, *, type: str, channel: str | None = None) -> dt.datetime | None:
    """When the customer's newest event of this type (on this channel) happened; None when there is none."""
    query = select(CrossChannelEvent.ts).where(
        CrossChannelEvent.customer_id == customer_id, CrossChannelEvent.type == type
    )
    if channel is not None:
        query = query.where(CrossChannelEvent.channel == channel)
    return session.scalar(query.order_by(CrossChannelEvent.ts.desc()).limit(1))


def start_contact_if_idle(
    session: Session, *, customer_id: str, gateway_channel: str, now: dt.datetime, idle: dt.timedelta
) -> bool:
    """Record a `contact` event unless the customer started one on this channel within `idle` before `now`.

    The last contact lives in the database, so several gateway processes agree on it. Returns whether an
    event was stored.
    """
    channel = public_channel(gateway_channel)
    last = last_event_ts(session, customer_id, type=CONTACT_EVENT_TYPE, channel=channel)
    if last is not None and now - last < idle:
        return False
    event = Event(
        customer_id=customer_id,
        ts=now,
        channel=channel,
        type=CONTACT_EVENT_TYPE,
        attrs={"gateway_channel": gateway_channel},
    )
    store_events(session, [event])
    return True


def profile_of(session: Session, customer_id: str) -> Profile | None:
    row = session.get(CustomerProfile, customer_id)
    if row is None:
        return None
    return Profile(customer_id=row.customer_id, attrs=dict(row.attrs or {}))


def open_live_contact(
    session: Session,
    *,
    customer_id: str,
    channel: str,
    ts: dt.datetime,
    conversation_id: str,
    predicted_intent: str | None,
    predicted_p: float | None,
) -> int:
    """Record the start of a live conversation with the model's guess; the final intent comes later.

    `channel` may be a gateway channel name ('webchat'); it is stored in the public vocabulary ('app').
    Returns the contact's id.
    """
    row = ContactRecord(
        customer_id=customer_id,
        ts=ts,
        channel=public_channel(channel),
        intent=None,
        predicted_intent=predicted_intent,
        predicted_p=predicted_p,
        source="live",
        conversation_id=conversation_id,
        created_at=_now(),
    )
    session.add(row)
    session.flush()
    return row.id


def resolve_live_contact(session: Session, conversation_id: str, intent: str) -> bool:
    """Set the final intent on the conversation's newest open live contact; False when there is none."""
    newest = session.scalar(
        select(ContactRecord.id)
        .where(
            ContactRecord.conversation_id == conversation_id,
            ContactRecord.source == "live",
            ContactRecord.intent.is_(None),
        )
        .order_by(ContactRecord.ts.desc(), ContactRecord.id.desc())
        .limit(1)
    )
    if newest is None:
        return False
    # The `intent IS NULL` guard makes a concurrent resolve of the same row a no-op instead of an overwrite.
    result = session.execute(
        update(ContactRecord)
        .where(ContactRecord.id == newest, ContactRecord.intent.is_(None))
        .values(intent=intent)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def iter_events(session: Session) -> Iterator[Event]:
    """Every stored event, by customer then time, streamed in batches (plain rows: no ORM identity map)."""
    table = _EVENTS.c
    rows = session.execute(
        select(table.customer_id, table.ts, table.channel, table.type, table.attrs, table.event_id)
        .order_by(table.customer_id, table.ts, table.id)
        .execution_options(yield_per=STREAM_BATCH)
    )
    for customer_id, ts, channel, type_, attrs, event_id in rows:
        yield Event(customer_id, ts, channel, type_, dict(attrs or {}), event_id)


def iter_profiles(session: Session) -> Iterator[Profile]:
    """Every stored profile, by customer, streamed in batches."""
    table = _PROFILES.c
    rows = session.execute(
        select(table.customer_id, table.attrs).order_by(table.customer_id).execution_options(yield_per=STREAM_BATCH)
    )
    for customer_id, attrs in rows:
        yield Profile(customer_id, dict(attrs or {}))


def iter_labelled_contacts(session: Session) -> Iterator[Contact]:
    """Every contact with a final intent (imported labels and resolved live contacts), by customer then time."""
    table = _CONTACTS.c
    rows = session.execute(
        select(table.customer_id, table.ts, table.channel, table.intent)
        .where(table.intent.is_not(None))
        .order_by(table.customer_id, table.ts, table.id)
        .execution_options(yield_per=STREAM_BATCH)
    )
    for customer_id, ts, channel, intent in rows:
        yield Contact(customer_id, ts, channel, intent)
