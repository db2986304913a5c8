"""The cross-channel event store on SQLite and PostgreSQL: idempotent bulk writes, history, live contacts, streams."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from bankcore import event_store
from bankcore.core_facts import core_fact_events, local_day_start, record_core_facts
from bankcore.database import is_sqlite, unit_of_work
from bankcore.events import Contact, Event, Profile
from bankcore.models import ContactRecord, CrossChannelEvent
from tests.core.support import NOW

Factory = sessionmaker[Session]


def event(
    customer_id: str = "C001",
    *,
    minutes_before: float = 0,
    type: str = "login",
    channel: str = "app",
    event_id: str | None = None,
    **attrs: object,
) -> Event:
    return Event(
        customer_id=customer_id,
        ts=NOW - dt.timedelta(minutes=minutes_before),
        channel=channel,
        type=type,
        attrs=dict(attrs),
        event_id=event_id,
    )


def count_events(factory: Factory) -> int:
    with unit_of_work(factory) as session:
        return int(session.scalar(select(func.count()).select_from(CrossChannelEvent)) or 0)


# --- store_events ------------------------------------------------------------------------------------------


def test_a_repeated_event_id_is_a_duplicate_not_an_error_nor_a_second_row(session_factory: Factory) -> None:
    with unit_of_work(session_factory) as session:
        first = event_store.store_events(
            session,
            [event(event_id="e-1", n=1), event(event_id="e-2"), event(event_id="e-1", n=2), event(), event()],
        )
    assert first == event_store.StoreReport(inserted=4, duplicates=1)
    with unit_of_work(session_factory) as session:
        again = event_store.store_events(session, [event(event_id="e-2"), event(event_id="e-3"), event()])
    assert again == event_store.StoreReport(inserted=2, duplicates=1)
    assert count_events(session_factory) == 6
    with unit_of_work(session_factory) as session:
        kept = session.scalar(select(CrossChannelEvent.attrs).where(CrossChannelEvent.event_id == "e-1"))
    assert kept == {"n": 1}, "the first occurrence of an event_id wins"


def test_an_empty_batch_stores_nothing(session_factory: Factory) -> None:
    with unit_of_work(session_factory) as session:
        assert event_store.store_events(session, []) == event_store.StoreReport(0, 0)
    assert count_events(session_factory) == 0


def test_concurrent_writers_with_overlapping_event_ids_store_each_id_once(session_factory: Factory) -> None:
    writers, per_writer, distinct = 8, 60, 100
    reports: list[event_store.StoreReport] = []
    failures: list[BaseException] = []
    start = threading.Barrier(writers)

    def write(offset: int) -> None:
        try:
            batch = [event(event_id=f"race-{(offset * 7 + i) % distinct}") for i in range(per_writer)]
            start.wait()
            with unit_of_work(session_factory) as session:
                reports.append(event_store.store_events(session, batch))
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    expected = {f"race-{(n * 7 + i) % distinct}" for n in range(writers) for i in range(per_writer)}
    assert count_events(session_factory) == len(expected)
    assert sum(r.inserted for r in reports) == len(expected)
    assert sum(r.inserted + r.duplicates for r in reports) == writers * per_writer


def test_a_bulk_import_of_many_events_is_a_few_statements(session_factory: Factory) -> None:
    statements = 0

    def count(*_: object) -> None:
        nonlocal statements
        statements += 1

    batch = [event(f"C{i % 50}", minutes_before=i, event_id=f"bulk-{i}" if i % 2 else None) for i in range(5000)]
    with unit_of_work(session_factory) as session:
        from sqlalchemy import event as sa_event

        engine = session.get_bind()
        sa_event.listen(engine, "before_cursor_execute", count)
        try:
            report = event_store.store_events(session, batch)
        finally:
            sa_event.remove(engine, "before_cursor_execute", count)
    assert report == event_store.StoreReport(inserted=5000, duplicates=0)
    assert statements <= 20, statements  # executemany pages, not 5,000 INSERTs


# --- events_before -----------------------------------------------------------------------------------------


def test_events_before_is_strictly_before_within_the_lookback_and_oldest_first(session_factory: Factory) -> None:
    at = NOW
    with unit_of_work(session_factory) as session:
        event_store.store_events(
            session,
            [
                event(type="at_the_moment", minutes_before=0),
                event(type="after", minutes_before=-5),
                event(type="one_minute_before", minutes_before=1),
                event(type="a_day_before", minutes_before=24 * 60),
                event(type="at_lookback_edge", minutes_before=90 * 24 * 60),
                event(type="beyond_lookback", minutes_before=90 * 24 * 60 + 1),
                event("C002", type="someone_else", minutes_before=2),
            ],
        )
    with unit_of_work(session_factory) as session:
        history = event_store.events_before(session, "C001", at)
    assert [e.type for e in history] == ["at_lookback_edge", "a_day_before", "one_minute_before"]
    assert all(e.ts < at and e.ts.tzinfo is not None for e in history)


def test_events_before_keeps_the_most_recent_max_events(session_factory: Factory) -> None:
    with unit_of_work(session_factory) as session:
        event_store.store_events(session, [event(type=f"e{i}", minutes_before=i) for i in range(1, 11)])
    with unit_of_work(session_factory) as session:
        recent = event_store.events_before(session, "C001", NOW, max_events=3)
        shorter = event_store.events_before(session, "C001", NOW, lookback=dt.timedelta(minutes=4, seconds=30))
        none = event_store.events_before(session, "C001", NOW, max_events=0)
    assert [e.type for e in recent] == ["e3", "e2", "e1"]
    assert [e.type for e in shorter] == ["e4", "e3", "e2", "e1"]
    assert none == []


def test_events_before_round_trips_every_field(session_factory: Factory) -> None:
    original = event(minutes_before=1, channel="wecom", type="bill_viewed", event_id="rt-1", amount=12.5, tag="中文")
    with unit_of_work(session_factory) as session:
        event_store.store_events(session, [original])
    with unit_of_work(session_factory) as session:
        assert event_store.events_before(session, "C001", NOW) == [original]


def test_events_before_reads_the_customer_time_index(session_factory: Factory) -> None:
    with unit_of_work(session_factory) as session:
        if not is_sqlite(session):
            pytest.skip("the plan check reads SQLite's EXPLAIN QUERY PLAN")
        plan = session.execute(
            text(
                "EXPLAIN QUERY PLAN SELECT * FROM cx_events WHERE customer_id = 'C001' "
                "AND ts < '2026-11-20' AND ts >= '2026-08-20' ORDER BY ts DESC, id DESC LIMIT 64"
            )
        ).all()
        assert "ix_cx_events_customer_ts" in " ".join(str(row) for row in plan)


# --- profiles and contacts ---------------------------------------------------------------------------------


def test_profiles_upsert_latest_wins(session_factory: Factory) -> None:
    with unit_of_work(session_factory) as session:
        stored = event_store.upsert_profiles(
            session, [Profile("C001", {"age": 30}), Profile("C002", {"age": 40}), Profile("C001", {"age": 31})]
        )
    assert stored == 2
    with unit_of_work(session_factory) as session:
        assert event_store.upsert_profiles(session, [Profile("C002", {"segment": "vip"})]) == 1
    with unit_of_work(session_factory) as session:
        assert event_store.profile_of(session, "C001") == Profile("C001", {"age": 31})
        assert event_store.profile_of(session, "C002") == Profile("C002", {"segment": "vip"})
        assert event_store.profile_of(session, "C404") is None
        assert list(event_store.iter_profiles(session)) == [
            Profile("C001", {"age": 31}),
            Profile("C002", {"segment": "vip"}),
        ]


def test_live_contacts_open_then_resolve_on_the_newest_open_one(session_factory: Factory) -> None:
    with unit_of_work(session_factory) as session:
        first = event_store.open_live_contact(
            session,
            customer_id="C001",
            channel="webchat",
            ts=NOW,
            conversation_id="webchat:C001",
            predicted_intent="check_balance",
            predicted_p=0.8,
        )
        second = event_store.open_live_contact(
            session,
            customer_id="C001",
            channel="webchat",
            ts=NOW + dt.timedelta(hours=2),
            conversation_id="webchat:C001",
            predicted_intent=None,
            predicted_p=None,
        )
    assert second > first
    with unit_of_work(session_factory) as session:
        assert event_store.resolve_live_contact(session, "webchat:C001", "transfer_money") is True
        assert event_store.resolve_live_contact(session, "webchat:C001", "check_balance") is True
        assert event_store.resolve_live_contact(session, "webchat:C001", "anything") is False
        assert event_store.resolve_live_contact(session, "wecom:C404", "anything") is False
    with unit_of_work(session_factory) as session:
        rows = {row.id: row for row in session.scalars(select(ContactRecord))}
    assert rows[second].intent == "transfer_money", "the newest open contact is resolved first"
    assert rows[first].intent == "check_balance"
    assert rows[first].channel == "app" and rows[first].source == "live"
    assert (rows[first].predicted_intent, rows[first].predicted_p) == ("check_balance", 0.8)


def test_streams_yield_everything_in_customer_and_time_order(session_factory: Factory) -> None:
    with unit_of_work(session_factory) as session:
        event_store.store_events(
            session, [event("C002", minutes_before=5), event("C001", minutes_before=1), event("C001", minutes_before=9)]
        )
        added = event_store.add_contacts(
            session,
            [
                Contact("C002", NOW, "ivr", "report_lost_card"),
                Contact("C001", NOW, "app", None),
                Contact("C001", NOW - dt.timedelta(days=1), "wecom", "check_balance"),
            ],
        )
        event_store.open_live_contact(
            session,
            customer_id="C003",
            channel="app",
            ts=NOW,
            conversation_id="conv-3",
            predicted_intent="x",
            predicted_p=0.1,
        )
        event_store.resolve_live_contact(session, "conv-3", "pay_credit_card")
    assert added == 3
    with unit_of_work(session_factory) as session:
        events = list(event_store.iter_events(session))
        contacts = list(event_store.iter_labelled_contacts(session))
    assert [(e.customer_id, e.ts) for e in events] == [
        ("C001", NOW - dt.timedelta(minutes=9)),
        ("C001", NOW - dt.timedelta(minutes=1)),
        ("C002", NOW - dt.timedelta(minutes=5)),
    ]
    assert contacts == [
        Contact("C001", NOW - dt.timedelta(days=1), "wecom", "check_balance"),
        Contact("C002", NOW, "ivr", "report_lost_card"),
        Contact("C003", NOW, "app", "pay_credit_card"),
    ]


def test_a_contact_event_starts_only_after_the_idle_gap(session_factory: Factory) -> None:
    idle = dt.timedelta(minutes=30)

    def start(at: dt.datetime, channel: str = "webchat") -> bool:
        with unit_of_work(session_factory) as session:
            return event_store.start_contact_if_idle(
                session, customer_id="C001", gateway_channel=channel, now=at, idle=idle
            )

    assert start(NOW) is True
    assert start(NOW + dt.timedelta(minutes=10)) is False
    assert start(NOW + dt.timedelta(minutes=10), channel="wecom") is True, "each channel has its own contacts"
    assert start(NOW + dt.timedelta(minutes=31)) is True
    with unit_of_work(session_factory) as session:
        history = event_store.events_before(session, "C001", NOW + dt.timedelta(hours=1))
    assert [(e.type, e.channel, e.attrs["gateway_channel"]) for e in history] == [
        ("contact", "app", "webchat"),
        ("contact", "wecom", "wecom"),
        ("contact", "app", "webchat"),
    ]


# --- core facts --------------------------------------------------------------------------------------------


def test_core_facts_of_the_demo_bank_use_the_shared_vocabulary(bank: Factory) -> None:
    with unit_of_work(bank) as session:
        facts = core_fact_events(session, NOW)
    by_id = {fact.event_id: fact for fact in facts}
    assert len(by_id) == len(facts)
    assert {fact.type for fact in facts} <= {
        "transfer_failed",
        "card_expiring",
        "credit_card_due",
        "loan_instalment_due",
        "deposit_maturing",
    }
    assert all(fact.channel == "core" for fact in facts)
    failed = by_id["core:transfer_failed:T-DEMO-0003"]
    assert failed.customer_id == "C001" and failed.ts < NOW
    assert failed.attrs == {"amount": 3000.0, "reason": "payee_account_closed"}
    today, day_start = local_day_start(NOW)
    assert today == dt.date(2026, 11, 20) and day_start == dt.datetime(2026, 11, 19, 16, tzinfo=dt.UTC)
    due = next(f for f in facts if f.type == "credit_card_due" and f.customer_id == "C001")
    assert due.ts == day_start
    assert due.attrs == {"amount": 6320.0, "minimum": 632.0, "days_left": 6}
    assert due.event_id == "core:credit_card_due:A1002:20261126"
    loan = next(f for f in facts if f.type == "loan_instalment_due" and f.customer_id == "C004")
    assert loan.attrs == {"amount": 1491.2, "days_left": 3}
    deposit = next(f for f in facts if f.type == "deposit_maturing")
    assert deposit.attrs == {"amount": 100000.0, "days_left": 18}
    for fact in facts:
        assert all(isinstance(value, float) for key, value in fact.attrs.items() if key in {"amount", "minimum"})


def test_recording_core_facts_again_stores_nothing_twice(bank: Factory) -> None:
    with unit_of_work(bank) as session:
        first = record_core_facts(session, NOW)
    with unit_of_work(bank) as session:
        later_that_day = record_core_facts(session, NOW + dt.timedelta(hours=6))
    assert first.inserted > 0 and first.duplicates == 0
    assert later_that_day == event_store.StoreReport(inserted=0, duplicates=first.inserted)
    assert count_events(bank) == first.inserted
    with unit_of_work(bank) as session:
        history = event_store.events_before(session, "C001", NOW + dt.timedelta(minutes=1))
    assert {e.type for e in history} >= {"transfer_failed", "credit_card_due", "loan_instalment_due"}


def test_core_facts_are_seen_once_per_due_date_as_days_pass(bank: Factory, now: dt.datetime) -> None:
    def record(at: dt.datetime) -> event_store.StoreReport:
        with unit_of_work(bank) as session:
            return record_core_facts(session, at)

    first = record(now)
    next_day = record(now + dt.timedelta(days=1))
    assert next_day.inserted == 0, "the same statements, instalments and deposits: no new events"
    assert next_day.duplicates <= first.inserted
